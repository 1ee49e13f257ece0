"""NT-Xent and SupCon: agreement with materialised formulas, backends, invariances, stability."""

from __future__ import annotations

import pytest
import torch

import contrastive.errors as cl_errors
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrastive.functional import nt_xent, supcon
from contrastive.losses.nt_xent import NTXentLoss
from contrastive.losses.supcon import SupConLoss
from tests.strategies import gaussian, labelled_views, labels, seeds, temperatures, views


def materialised_supcon(
    views: list[torch.Tensor],
    labels: torch.Tensor,
    temperature: float,
    contrast_mode: str = "all",
    base_temperature: float | None = None,
) -> torch.Tensor:
    """Khosla et al.'s L_out written out on the full matrix (anchors without positives left out)."""
    z = F.normalize(torch.cat(views), dim=1)
    y = labels.repeat(len(views))
    n_anchor = z.shape[0] if contrast_mode == "all" else views[0].shape[0]
    logits = z[:n_anchor] @ z.T / temperature
    not_self = torch.ones_like(logits, dtype=torch.bool)
    not_self[torch.arange(n_anchor), torch.arange(n_anchor)] = False
    positive = (y[:n_anchor, None] == y[None, :]) & not_self
    log_prob = logits - torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
    count = positive.sum(1)
    per_anchor = -(log_prob * positive).sum(1)[count > 0] / count[count > 0]
    loss = per_anchor.mean()
    return loss * (temperature / base_temperature) if base_temperature else loss


def simclr_two_views(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent as usually written: cross entropy over the 2B x 2B logits without the diagonal."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(logits, target)


def _grads(loss_fn, vs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss value and gradients w.r.t. fresh copies of the views."""
    leaves = [v.clone().requires_grad_() for v in vs]
    loss = loss_fn(leaves)
    return loss.detach(), list(torch.autograd.grad(loss, leaves))


@given(vs=views(min_views=2, max_views=2), temperature=temperatures(0.05, 5.0))
def test_nt_xent_with_two_views_is_simclr(vs: list[torch.Tensor], temperature: float) -> None:
    ours = nt_xent(*vs, temperature=temperature, block_size=4)
    assert torch.allclose(ours, simclr_two_views(*vs, temperature), rtol=1e-10)


@given(vs=views(), temperature=temperatures(0.05, 5.0))
def test_nt_xent_with_many_views_is_supcon_with_one_label_per_sample(
    vs: list[torch.Tensor], temperature: float
) -> None:
    pair_ids = torch.arange(vs[0].shape[0])
    assert torch.allclose(
        nt_xent(*vs, temperature=temperature), materialised_supcon(vs, pair_ids, temperature), rtol=1e-10
    )


@given(
    data=labelled_views(min_views=1, max_views=3),
    temperature=temperatures(0.05, 5.0),
    contrast_mode=st.sampled_from(["all", "one"]),
    base=st.sampled_from([None, 0.07]),
)
def test_supcon_matches_the_materialised_formula(
    data, temperature: float, contrast_mode: str, base: float | None
) -> None:
    vs, y = data
    expected = materialised_supcon(vs, y, temperature, contrast_mode, base)
    if len(vs) == 1 and not torch.isfinite(expected):
        # no anchor has a positive (the materialised mean is NaN): zero by default, or an error
        with pytest.warns(cl_errors.NoPositiveWarning):
            assert supcon(*vs, labels=y, temperature=temperature, contrast_mode=contrast_mode).item() == 0.0
        with pytest.raises(ValueError, match="positive"):
            supcon(*vs, labels=y, temperature=temperature, contrast_mode=contrast_mode, no_positive="raise")
        return
    ours = supcon(
        *vs,
        labels=y,
        temperature=temperature,
        contrast_mode=contrast_mode,
        base_temperature=base,
        block_size=3,
    )
    assert torch.allclose(ours, expected, rtol=1e-10)


@given(vs=views(), temperature=temperatures(0.05, 5.0))
def test_supcon_without_labels_or_with_unique_labels_is_nt_xent(
    vs: list[torch.Tensor], temperature: float
) -> None:
    expected = nt_xent(*vs, temperature=temperature)
    assert torch.allclose(supcon(*vs, temperature=temperature), expected, rtol=1e-12)
    unique = torch.randperm(vs[0].shape[0]) * 5 + 3
    assert torch.allclose(supcon(*vs, labels=unique, temperature=temperature), expected, rtol=1e-12)


@given(
    data=labelled_views(min_views=2, max_views=3, max_batch=8),
    temperature=temperatures(0.05, 5.0),
    block=st.integers(1, 20),
    contrast_mode=st.sampled_from(["all", "one"]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_chunked_and_reference_losses_agree_on_values_and_gradients(
    data, temperature, block, contrast_mode, dtype
) -> None:
    vs, y = data
    vs = [v.to(dtype) for v in vs]
    options = {"labels": y, "temperature": temperature, "contrast_mode": contrast_mode, "block_size": block}
    results = [
        _grads(lambda leaves, b=backend: supcon(*leaves, backend=b, **options), vs)
        for backend in ("reference", "chunked")
    ]
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    (ref, ref_grads), (out, out_grads) = results
    assert torch.allclose(out, ref, rtol=tol, atol=tol)
    for a, b in zip(out_grads, ref_grads, strict=True):
        assert torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max())))


@given(data=labelled_views(), temperature=temperatures(0.05, 5.0), seed=seeds())
def test_supcon_is_invariant_to_jointly_permuting_samples(data, temperature: float, seed: int) -> None:
    vs, y = data
    perm = torch.randperm(y.numel(), generator=torch.Generator().manual_seed(seed))
    before = supcon(*vs, labels=y, temperature=temperature)
    after = supcon(*[v[perm] for v in vs], labels=y[perm], temperature=temperature)
    assert torch.allclose(before, after, rtol=1e-10)


@given(data=labelled_views(), temperature=temperatures(0.05, 5.0), seed=seeds())
def test_supcon_is_invariant_to_a_common_rotation(data, temperature: float, seed: int) -> None:
    vs, y = data
    d = vs[0].shape[1]
    rotation, _ = torch.linalg.qr(gaussian((d, d), seed))
    before = supcon(*vs, labels=y, temperature=temperature)
    after = supcon(*[v @ rotation for v in vs], labels=y, temperature=temperature)
    assert torch.allclose(before, after, rtol=1e-9)


@given(data=labelled_views(), temperature=temperatures(0.05, 5.0), scale=st.floats(1e-3, 1e3))
def test_normalised_losses_are_invariant_to_scaling(data, temperature: float, scale: float) -> None:
    vs, y = data
    before = supcon(*vs, labels=y, temperature=temperature)
    after = supcon(*[v * scale for v in vs], labels=y, temperature=temperature)
    assert torch.allclose(before, after, rtol=1e-9)


@given(data=labelled_views(), temperature=temperatures(0.05, 5.0))
def test_reversing_the_views_leaves_the_loss_unchanged(data, temperature: float) -> None:
    vs, y = data
    assert torch.allclose(
        supcon(*vs, labels=y, temperature=temperature),
        supcon(*vs[::-1], labels=y, temperature=temperature),
        rtol=1e-10,
    )
    assert torch.allclose(
        nt_xent(*vs, temperature=temperature), nt_xent(*vs[::-1], temperature=temperature), rtol=1e-10
    )


@given(
    data=labelled_views(max_batch=8, dtype=torch.float32),
    temperature=temperatures(1e-3, 10.0),
    norm=st.floats(1e-3, 1e4),
    normalize=st.booleans(),
    backend=st.sampled_from(["reference", "chunked"]),
)
def test_values_and_gradients_are_finite_for_extreme_temperatures_and_norms(
    data, temperature, norm, normalize, backend
) -> None:
    vs, y = data
    vs = [F.normalize(v, dim=1) * norm for v in vs]
    loss, grads = _grads(
        lambda leaves: supcon(
            *leaves, labels=y, temperature=temperature, normalize=normalize, backend=backend, block_size=3
        ),
        vs,
    )
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
@given(data=labelled_views(min_views=2, max_views=2, max_batch=5, max_dim=3), block=st.integers(1, 6))
def test_loss_gradients_pass_gradcheck_in_float64(data, block: int) -> None:
    vs, y = data
    leaves = [v.clone().requires_grad_() for v in vs]
    temperature = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, t: supcon(a, b, labels=y, temperature=t, block_size=block), (*leaves, temperature)
    )


def test_learnable_temperature_module_registers_the_parameter_and_gets_a_gradient() -> None:
    t = torch.nn.Parameter(torch.tensor(0.2, dtype=torch.float64))
    loss_fn = NTXentLoss(temperature=t)
    assert any(p is t for p in loss_fn.parameters())
    loss_fn(gaussian((6, 4), 1), gaussian((6, 4), 2)).backward()
    assert t.grad is not None and torch.isfinite(t.grad)


def test_zero_vectors_with_normalize_do_not_produce_nan() -> None:
    z1 = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    z2 = gaussian((4, 3), 3).requires_grad_()
    loss = NTXentLoss()(z1, z2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_anchors_without_positives_are_left_out_of_the_mean() -> None:
    z = gaussian((5, 3), 4)
    y = torch.tensor([0, 0, 1, 2, 3])
    expected = materialised_supcon([z], y, 0.5)  # only anchors 0 and 1 have a positive
    assert torch.allclose(SupConLoss(temperature=0.5)(z, labels=y), expected, rtol=1e-12)


@given(data=labelled_views(min_views=1, max_views=3, max_batch=10), temperature=temperatures(0.05, 2.0))
def test_supcon_agrees_with_pytorch_metric_learning(data, temperature: float) -> None:
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    vs, y = data
    stacked_labels = y.repeat(len(vs))
    if int(torch.unique(stacked_labels, return_counts=True)[1].max()) < 2 or torch.unique(y).numel() < 2:
        return  # pytorch-metric-learning returns 0 without positives or negatives; ours raises or differs
    expected = pml.SupConLoss(temperature=temperature)(torch.cat(vs), stacked_labels)
    ours = supcon(*vs, labels=y, temperature=temperature)
    assert torch.allclose(ours, expected.to(ours.dtype), rtol=1e-6)


@given(vs=views(min_views=2, max_views=2), temperature=temperatures(0.05, 2.0))
def test_nt_xent_agrees_with_pytorch_metric_learning_on_two_views(
    vs: list[torch.Tensor], temperature: float
) -> None:
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    b = vs[0].shape[0]
    expected = pml.NTXentLoss(temperature=temperature)(torch.cat(vs), torch.arange(b).repeat(2))
    assert torch.allclose(nt_xent(*vs, temperature=temperature), expected.to(torch.float64), rtol=1e-6)


def test_modules_and_functions_agree() -> None:
    vs = [gaussian((6, 4), s) for s in range(3)]
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    assert torch.equal(NTXentLoss(0.3)(*vs), nt_xent(*vs, temperature=0.3))
    assert torch.equal(
        SupConLoss(0.3, contrast_mode="one")(*vs, labels=y),
        supcon(*vs, labels=y, temperature=0.3, contrast_mode="one"),
    )


def test_labels_of_any_integer_values_work() -> None:
    vs = [gaussian((4, 3), s) for s in range(2)]
    a = supcon(*vs, labels=torch.tensor([-7, 100, -7, 3]))
    b = supcon(*vs, labels=torch.tensor([0, 2, 0, 1], dtype=torch.int32))
    assert torch.allclose(a, b, rtol=1e-12)


@given(y=labels(6))
def test_label_strategy_has_the_requested_length(y: torch.Tensor) -> None:
    assert y.shape == (6,) and y.dtype == torch.long
