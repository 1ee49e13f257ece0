"""Negative samplers: published formulas, reductions between them, every loss, and drawing negatives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrastive.functional import clip, infonce, nt_xent, supcon
from contrastive.samplers import (
    DebiasedSampler,
    HardNegativeSampler,
    Sampler,
    UniformSampler,
    resolve_sampler,
)
from tests.strategies import gaussian, labelled_views, seeds, temperatures, views


def published_two_view_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, tau_plus: float, beta: float | None
) -> torch.Tensor:
    """Chuang et al. (beta=None) and Robinson et al. two-view objectives, re-derived on the full matrix."""
    b = z1.shape[0]
    out = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = torch.exp(out @ out.T / temperature)
    keep = torch.ones(2 * b, 2 * b, dtype=torch.bool)
    idx = torch.arange(2 * b)
    keep[idx, idx] = False
    keep[idx, (idx + b) % (2 * b)] = False
    neg = sim[keep].view(2 * b, 2 * b - 2)
    pos = torch.exp((F.normalize(z1, dim=1) * F.normalize(z2, dim=1)).sum(1) / temperature).repeat(2)
    n = 2 * b - 2
    if beta is None:
        total = neg.sum(dim=-1)
    else:
        importance = neg**beta
        total = (importance * neg).sum(dim=-1) / importance.mean(dim=-1)
    ng = ((total - tau_plus * n * pos) / (1 - tau_plus)).clamp(min=n * math.e ** (-1 / temperature))
    return (-torch.log(pos / (pos + ng))).mean()


@given(vs=views(min_views=2, max_views=2), temperature=temperatures(0.1, 2.0), tau_plus=st.floats(0.0, 0.5))
def test_debiased_nt_xent_equals_the_published_formula(vs, temperature: float, tau_plus: float) -> None:
    ours = nt_xent(*vs, temperature=temperature, sampler=DebiasedSampler(tau_plus=tau_plus), block_size=3)
    assert torch.allclose(ours, published_two_view_loss(*vs, temperature, tau_plus, None), rtol=1e-10)


@given(
    vs=views(min_views=2, max_views=2),
    temperature=temperatures(0.1, 2.0),
    tau_plus=st.floats(0.0, 0.5),
    beta=st.floats(0.0, 3.0),
)
def test_hard_nt_xent_equals_the_published_formula(
    vs, temperature: float, tau_plus: float, beta: float
) -> None:
    ours = nt_xent(*vs, temperature=temperature, sampler=HardNegativeSampler(beta=beta, tau_plus=tau_plus))
    assert torch.allclose(ours, published_two_view_loss(*vs, temperature, tau_plus, beta), rtol=1e-9)


@given(data=labelled_views(), temperature=temperatures(1e-3, 10.0), tau_plus=st.floats(0.0, 0.9))
def test_hard_sampler_with_beta_zero_is_exactly_debiased(data, temperature: float, tau_plus: float) -> None:
    vs, y = data
    hard = supcon(*vs, labels=y, temperature=temperature, sampler=HardNegativeSampler(0.0, tau_plus))
    debiased = supcon(*vs, labels=y, temperature=temperature, sampler=DebiasedSampler(tau_plus))
    assert torch.equal(hard, debiased)


@given(data=labelled_views(), temperature=temperatures(1e-3, 10.0))
def test_samplers_without_correction_are_exactly_uniform(data, temperature: float) -> None:
    vs, y = data
    uniform = supcon(*vs, labels=y, temperature=temperature)
    for sampler in (HardNegativeSampler(0.0, 0.0), DebiasedSampler(0.0)):
        assert torch.equal(supcon(*vs, labels=y, temperature=temperature, sampler=sampler), uniform)


@given(data=labelled_views(max_batch=8), temperature=temperatures(0.05, 2.0), tau_plus=st.floats(0.0, 0.5))
def test_hard_sampler_is_continuous_at_beta_zero(data, temperature: float, tau_plus: float) -> None:
    vs, y = data
    near = supcon(*vs, labels=y, temperature=temperature, sampler=HardNegativeSampler(1e-9, tau_plus))
    at = supcon(*vs, labels=y, temperature=temperature, sampler=HardNegativeSampler(0.0, tau_plus))
    assert torch.allclose(near, at, rtol=1e-6)


SAMPLERS = [
    UniformSampler(),
    DebiasedSampler(0.1),
    HardNegativeSampler(1.0, 0.1),
    HardNegativeSampler(0.5, 0.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
@given(
    data=labelled_views(min_views=2, max_views=2, max_batch=6, max_dim=4),
    seed=seeds(),
    block=st.integers(1, 8),
)
def test_every_sampler_works_with_every_loss_on_both_backends(
    sampler: Sampler, data, seed: int, block: int
) -> None:
    vs, y = data
    negatives = gaussian((3, vs[0].shape[1]), seed)
    calls = {
        "nt_xent": lambda a, b, o: nt_xent(a, b, negatives=negatives, **o),
        "supcon": lambda a, b, o: supcon(a, b, labels=y, **o),
        "infonce": lambda a, b, o: infonce(a, b, negatives, **o),
        "clip": lambda a, b, o: clip(a, b, logit_scale=-math.log(o.pop("temperature")), **o),
    }
    for name, call in calls.items():
        results = []
        for backend in ("reference", "chunked"):
            leaves = [v.clone().requires_grad_() for v in vs]
            options = {"temperature": 0.2, "sampler": sampler, "backend": backend, "block_size": block}
            loss = call(*leaves, options)
            results.append((loss.detach(), torch.autograd.grad(loss, leaves)))
        (ref, ref_grads), (out, out_grads) = results
        assert torch.isfinite(out), name
        assert torch.allclose(out, ref, rtol=1e-9), name
        for a, b in zip(out_grads, ref_grads, strict=True):
            assert torch.isfinite(a).all() and torch.allclose(a, b, rtol=1e-8, atol=1e-10), name


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS[1:3], ids=repr)
@given(data=labelled_views(min_views=2, max_views=2, max_batch=5, max_dim=3))
def test_sampler_gradients_pass_gradcheck_in_float64(sampler: Sampler, data) -> None:
    vs, y = data
    leaves = [v.clone().requires_grad_() for v in vs]
    assert torch.autograd.gradcheck(
        lambda a, b: supcon(a, b, labels=y, temperature=0.5, sampler=sampler), leaves
    )


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
@given(seed=seeds(), m=st.integers(1, 6), n=st.integers(2, 12), k=st.integers(1, 20))
def test_draw_never_returns_a_positive_or_the_anchor_itself(
    sampler: Sampler, seed: int, m: int, n: int, k: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(m, n, generator=g)
    positive = torch.rand(m, n, generator=g) < 0.3
    anchor_index = torch.randint(-1, n, (m,), generator=g)
    forbidden = positive.clone()
    rows = torch.nonzero(anchor_index >= 0).squeeze(1)
    forbidden[rows, anchor_index[rows]] = True
    if forbidden.all(dim=1).any():
        with pytest.raises(ValueError, match="no negative"):
            sampler.draw(sim, positive, k, generator=g, anchor_index=anchor_index)
        return
    drawn = sampler.draw(sim, positive, k, generator=g, anchor_index=anchor_index)
    assert drawn.shape == (m, k) and drawn.dtype == torch.long
    assert not forbidden.gather(1, drawn).any()


def test_draw_excludes_the_diagonal_of_a_square_matrix_by_default() -> None:
    sim = torch.zeros(3, 3)
    positive = torch.tensor([[False, True, False], [False, False, True], [True, False, False]])
    drawn = UniformSampler().draw(sim, positive, 50, generator=torch.Generator().manual_seed(0))
    assert drawn.tolist() == [[2] * 50, [0] * 50, [1] * 50]


def test_hard_sampler_draws_negatives_in_proportion_to_exp_beta_s() -> None:
    sim = torch.tensor([[0.0, 0.5, 1.0, 1.5, 3.0]])
    positive = torch.tensor([[False, False, False, False, True]])
    beta = 1.2
    drawn = HardNegativeSampler(beta=beta).draw(
        sim, positive, 40000, generator=torch.Generator().manual_seed(0), anchor_index=torch.tensor([-1])
    )
    frequency = torch.bincount(drawn[0], minlength=5).double() / drawn.numel()
    expected = torch.softmax(beta * sim[0, :4].double(), dim=0)
    assert frequency[4] == 0
    assert torch.allclose(frequency[:4], expected, atol=0.01)


def test_draw_is_reproducible_with_a_generator() -> None:
    sim = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    positive = torch.zeros(4, 9, dtype=torch.bool)
    first = DebiasedSampler().draw(sim, positive, 5, generator=torch.Generator().manual_seed(3))
    second = DebiasedSampler().draw(sim, positive, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must"),
        ({"positive_mask": torch.zeros(2, 2)}, "positive_mask"),
    ],
)
def test_bad_draw_arguments_raise_value_error(kwargs: dict, match: str) -> None:
    args = {"similarities": torch.zeros(2, 3), "positive_mask": torch.zeros(2, 3, dtype=torch.bool), "k": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        UniformSampler().draw(**args)


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: DebiasedSampler(tau_plus=1.0), "tau_plus"),
        (lambda: DebiasedSampler(tau_plus=-0.1), "tau_plus"),
        (lambda: HardNegativeSampler(tau_plus=1.5), "tau_plus"),
        (lambda: HardNegativeSampler(beta=-1.0), "beta"),
        (lambda: HardNegativeSampler(beta=float("nan")), "beta"),
    ],
)
def test_bad_sampler_options_raise_value_error(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_samplers_resolve_by_name_class_or_instance() -> None:
    assert isinstance(resolve_sampler("uniform"), UniformSampler)
    assert resolve_sampler("hard", beta=2.0).beta == 2.0
    instance = DebiasedSampler(0.2)
    assert resolve_sampler(instance) is instance
    with pytest.raises(ValueError):
        resolve_sampler("no-such-sampler")
    with pytest.raises(ValueError, match="sampler"):
        resolve_sampler(object())


def _debiased_log_by_autograd(log_sum: torch.Tensor, log_correction: torch.Tensor, floor, shift: float):
    """The formula ``DebiasedLog`` writes out, in autograd (a finite dummy keeps the unused branch's gradient 0)."""
    gap = log_correction < log_sum
    ratio = torch.where(gap, log_correction - log_sum, torch.full_like(log_sum, -1.0))
    kept = log_sum + torch.log1p(-torch.exp(ratio)) + shift
    value = torch.where(gap, kept, torch.full_like(log_sum, -math.inf))
    return torch.maximum(value, floor) if isinstance(floor, torch.Tensor) else torch.clamp(value, min=floor)


@pytest.mark.parametrize("tensor_floor", [False, True])
@given(seed=seeds(), n=st.integers(1, 12))
def test_debiased_log_equals_its_autograd_formula_on_values_and_gradients(
    tensor_floor: bool, seed: int, n: int
) -> None:
    """Values and gradients (log sum, correction, a learnable floor) against autograd, with edge rows:
    C >= L (the floor), C = -inf (no correction), L = -inf (no negatives), a candidate just above the floor."""
    from contrastive.samplers.debiased import DebiasedLog

    g = torch.Generator().manual_seed(seed)
    log_sum = torch.randn(n + 4, generator=g, dtype=torch.float64) * 3
    log_correction = log_sum + torch.randn(n + 4, generator=g, dtype=torch.float64) * 2 - 1
    log_correction[0] = log_sum[0] + 0.5  # C > L
    log_correction[1] = -math.inf
    log_sum[2], log_correction[2] = -math.inf, -math.inf  # no negatives and no positives: the floor
    floor_value = -2.0
    log_sum[3] = -1.0  # log(e^L - e^C) + 0.1 = floor + 0.05: kept, just above the floor
    log_correction[3] = math.log(math.exp(-1.0) - math.exp(floor_value + 0.05 - 0.1))
    weights = torch.randn(n + 4, generator=g, dtype=torch.float64)
    outs = []
    for fn in (DebiasedLog.apply, _debiased_log_by_autograd):
        a = log_sum.clone().requires_grad_()
        c = log_correction.clone().requires_grad_()
        floor = torch.tensor(floor_value, dtype=torch.float64, requires_grad=True) if tensor_floor else floor_value
        y = fn(a, c, floor, 0.1)
        (y.nan_to_num(neginf=0.0) * weights).sum().backward()
        outs.append((y.detach(), a.grad, c.grad, floor.grad if tensor_floor else None))
    (y, ga, gc, gf), (ry, rga, rgc, rgf) = outs
    torch.testing.assert_close(y, ry)
    torch.testing.assert_close(ga, rga)
    torch.testing.assert_close(gc, rgc)
    assert torch.isfinite(ga).all() and torch.isfinite(gc).all()
    assert y[0] == floor_value and y[2] == floor_value  # C >= L, and no negatives: the floor
    assert abs(y[3].item() - (floor_value + 0.05)) < 1e-12 and ga[3] != 0
    if tensor_floor:
        torch.testing.assert_close(gf, rgf)
