"""DCL/DCLW, per-sample weights and label smoothing (issue 18) against materialised formulas.

Each fast path (the reference, chunked and Triton-interpreter backends) is compared on
values and gradients with an O(N^2) formula written here from the papers' definitions.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as Fn
from hypothesis import given, settings
from hypothesis import strategies as st

import contrastive as cl
from contrastive import functional as F
from contrastive.engine.triton import triton_available

Tensor = torch.Tensor
TOL = {"rtol": 1e-7, "atol": 1e-9}
BACKENDS = [("reference", None), ("chunked", None), ("chunked", 3)]


def _data(seed: int, batch: int, dim: int, views: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=torch.float64) for _ in range(views)]


def _leaves(xs: list[Tensor]) -> list[Tensor]:
    return [x.clone().requires_grad_() for x in xs]


def _value_and_grads(fn, xs: list[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:  # noqa: ANN001
    leaves = _leaves(xs)
    with warnings.catch_warnings():  # batches without a valid anchor are a zero loss on both sides
        warnings.simplefilter("ignore", cl.NoPositiveWarning)
        value = fn(*leaves)
    return value.detach(), torch.autograd.grad(value, leaves, allow_unused=True, materialize_grads=True)


def _assert_same(fast, slow, xs: list[Tensor]) -> None:  # noqa: ANN001
    (v, gs), (e, es) = _value_and_grads(fast, xs), _value_and_grads(slow, xs)
    torch.testing.assert_close(v, e, **TOL)
    for g, h in zip(gs, es, strict=True):
        torch.testing.assert_close(g, h, **TOL)


def dense_multiview(views: list[Tensor], labels: Tensor | None, t: float, decoupled: bool = False,
                    positive_weight: Tensor | None = None, weights: Tensor | None = None) -> Tensor:
    """SupCon / NT-Xent / DCL over stacked views, materialised: the obviously right version."""
    b, v = views[0].shape[0], len(views)
    z = Fn.normalize(torch.cat(views), dim=1)
    y = (torch.arange(b) if labels is None else labels).repeat(v)
    s = z @ z.T / t
    eye = torch.eye(v * b, dtype=torch.bool)
    pos = (y[:, None] == y[None, :]) & ~eye
    keep = ~eye & ~pos if decoupled else ~eye
    lse = torch.logsumexp(s.masked_fill(~keep, -math.inf), dim=1)
    mean_pos = (s * pos).sum(1) / pos.sum(1).clamp(min=1)
    if positive_weight is not None:
        mean_pos = mean_pos * positive_weight
    valid = pos.any(1) & keep.any(1)
    w = torch.ones(v * b, dtype=s.dtype) if weights is None else weights.repeat(v)
    w = w * valid
    losses = torch.where(valid, lse - mean_pos, torch.zeros((), dtype=s.dtype))
    return (w * losses).sum() / w.sum().clamp(min=1e-300)  # no valid anchor: 0


def lightly_dclw_paper_form(z0: Tensor, z1: Tensor, t: float, sigma: float | None) -> Tensor:
    """lightly's DCLLoss/DCLWLoss (1.6.0): one log-sum-exp over all negatives (paper Eq. 6)."""
    a, b = Fn.normalize(z0, dim=1), Fn.normalize(z1, dim=1)

    def one_way(a: Tensor, b: Tensor) -> Tensor:
        n = a.shape[0]
        eye = torch.eye(n, dtype=torch.bool)
        s00, s01 = a @ a.T / t, a @ b.T / t
        positive = -s01[eye]
        if sigma is not None:  # negative von Mises-Fisher weights, constants
            cos = (a * b).sum(1).detach() / sigma
            positive = positive * (2 - n * torch.softmax(cos, dim=0))
        negatives = torch.cat([s00[~eye].view(n, -1), s01[~eye].view(n, -1)], dim=1)
        return (positive + torch.logsumexp(negatives, dim=1)).mean()

    return (one_way(a, b) + one_way(b, a)) / 2


# ---------------------------------------------------------------- DCL and DCLW


@settings(max_examples=30)
@given(seed=st.integers(0, 2**16), batch=st.integers(2, 7), dim=st.integers(1, 5), views=st.integers(2, 3),
       t=st.floats(0.05, 2.0), use_labels=st.booleans())
@pytest.mark.parametrize("backend, block", BACKENDS)
def test_dcl_equals_the_materialised_decoupled_loss(backend: str, block: int | None, seed: int, batch: int,
                                                     dim: int, views: int, t: float, use_labels: bool) -> None:
    xs = _data(seed, batch, dim, views)
    labels = torch.randint(0, 3, (batch,), generator=torch.Generator().manual_seed(seed)) if use_labels else None
    options = {"temperature": t, "backend": backend, "block_size": block}
    _assert_same(lambda *v: F.dcl(*v, labels=labels, **options),
                 lambda *v: dense_multiview(list(v), labels, t, decoupled=True), xs)
    twin = (lambda *v: F.supcon(*v, labels=labels, decoupled=True, **options)) if use_labels else (
        lambda *v: F.nt_xent(*v, decoupled=True, **options))
    _assert_same(twin, lambda *v: F.dcl(*v, labels=labels, **options), xs)


@settings(max_examples=20)
@given(seed=st.integers(0, 2**16), batch=st.integers(2, 8), dim=st.integers(1, 5), t=st.floats(0.05, 1.0),
       sigma=st.one_of(st.none(), st.floats(0.1, 2.0)))
@pytest.mark.parametrize("backend, block", BACKENDS)
def test_dcl_and_dclw_equal_lightlys_formulas_in_the_papers_form(backend: str, block: int | None, seed: int,
                                                                 batch: int, dim: int, t: float,
                                                                 sigma: float | None) -> None:
    xs = _data(seed, batch, dim, 2)
    loss = cl.get_loss("dcl", temperature=t, weight_sigma=sigma, backend=backend, block_size=block)
    _assert_same(loss, lambda a, b: lightly_dclw_paper_form(a, b, t, sigma), xs)


def test_lightlys_earlier_dcl_differs_by_its_two_log_sum_exps() -> None:
    """lightly before its PR #1826 fix summed two log-sum-exps where the paper takes one."""
    z0, z1 = _data(0, 6, 4, 2)
    a, b = Fn.normalize(z0, dim=1), Fn.normalize(z1, dim=1)
    eye = torch.eye(6, dtype=torch.bool)

    def two_lse(a: Tensor, b: Tensor) -> Tensor:
        s00, s01 = a @ a.T / 0.1, a @ b.T / 0.1
        return (-s01[eye] + torch.logsumexp(s00[~eye].view(6, -1), 1)
                + torch.logsumexp(s01[~eye].view(6, -1), 1)).mean()

    lightly_before = (two_lse(a, b) + two_lse(b, a)) / 2
    ours = F.dcl(z0, z1, temperature=0.1)
    torch.testing.assert_close(ours, lightly_dclw_paper_form(z0, z1, 0.1, None))
    assert not torch.allclose(ours, lightly_before)


@pytest.mark.parametrize("sampler", [{"name": "hard", "beta": 0.8, "tau_plus": 0.1},
                                     {"name": "debiased", "tau_plus": 0.1}])
@pytest.mark.parametrize("block", [None, 3])
def test_decoupled_losses_compose_with_the_samplers(sampler: dict, block: int | None) -> None:
    xs = _data(4, 7, 5, 2)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 3])
    s = cl.get_sampler(sampler["name"], **{k: v for k, v in sampler.items() if k != "name"})
    for sigma in (None, 0.5):
        fast = cl.get_loss("dcl", weight_sigma=sigma, sampler=s, backend="chunked", block_size=block)
        slow = cl.get_loss("dcl", weight_sigma=sigma, sampler=s, backend="reference")
        _assert_same(fast, slow, xs)
        _assert_same(lambda *v: fast(*v, labels=labels), lambda *v: slow(*v, labels=labels), xs)


def test_a_decoupled_batch_of_one_sample_is_a_zero_loss_with_a_warning() -> None:
    z = _leaves(_data(1, 1, 4, 2))
    with pytest.warns(cl.NoPositiveWarning, match="both a positive and a negative"):
        value = F.dcl(*z)
    value.backward()
    assert value == 0 and all(torch.equal(v.grad, torch.zeros_like(v)) for v in z)
    with pytest.raises(ValueError, match="both a positive and a negative"):
        F.dcl(*z, no_positive="raise")


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_dcl_dclw_weights_and_smoothing_on_the_triton_backend() -> None:
    xs = _data(2, 6, 4, 2)
    w = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    neg = _data(3, 4, 4, 1)[0]
    for fast, slow in [
        (lambda *v: F.dcl(*v, weight_sigma=0.5, weights=w, backend="triton"),
         lambda *v: F.dcl(*v, weight_sigma=0.5, weights=w, backend="reference")),
        (lambda *v: F.infonce(*v, neg, label_smoothing=0.2, weights=w, backend="triton"),
         lambda *v: F.infonce(*v, neg, label_smoothing=0.2, weights=w, backend="reference")),
        (lambda *v: F.clip(*v, label_smoothing=0.1, decoupled=False, backend="triton"),
         lambda *v: F.clip(*v, label_smoothing=0.1, backend="reference")),
    ]:
        (v, gs), (e, es) = _value_and_grads(fast, [x.float() for x in xs]), _value_and_grads(slow, xs)
        torch.testing.assert_close(v.double(), e, rtol=1e-4, atol=1e-5)
        for g, h in zip(gs, es, strict=True):
            torch.testing.assert_close(g.double(), h, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------- per-sample weights


def _weighted_cases(weights: Tensor | None) -> dict[str, tuple]:
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 3])[: weights.shape[0]] if weights is not None else None
    return {
        "nt_xent": lambda *v, **o: F.nt_xent(*v, weights=weights, **o),
        "supcon": lambda *v, **o: F.supcon(*v, labels=labels, weights=weights, **o),
        "dcl": lambda *v, **o: F.dcl(*v, weights=weights, **o),
        "infonce": lambda *v, **o: F.infonce(*v, weights=weights, **o),
        "clip": lambda *v, **o: F.clip(*v, labels=labels, weights=weights, **o),
    }


@pytest.mark.parametrize("name", list(_weighted_cases(None)))
@pytest.mark.parametrize("backend, block", BACKENDS)
def test_weights_of_one_give_the_unweighted_loss(name: str, backend: str, block: int | None) -> None:
    xs = _data(5, 7, 4, 2)
    ones = torch.ones(7, dtype=torch.float64)
    weighted, plain = _weighted_cases(ones)[name], _weighted_cases(None)[name]
    if name in ("supcon", "clip"):  # the same labels without weights
        labels = torch.tensor([0, 1, 0, 2, 1, 1, 3])
        plain = {"supcon": lambda *v, **o: F.supcon(*v, labels=labels, **o),
                 "clip": lambda *v, **o: F.clip(*v, labels=labels, **o)}[name]
    _assert_same(lambda *v: weighted(*v, backend=backend, block_size=block),
                 lambda *v: plain(*v, backend=backend, block_size=block), xs)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**16), batch=st.integers(2, 7), views=st.integers(2, 3), decoupled=st.booleans(),
       zeros=st.integers(0, 3), use_labels=st.booleans())
@pytest.mark.parametrize("backend, block", BACKENDS)
def test_weighted_multiview_losses_equal_the_materialised_weighted_mean(
        backend: str, block: int | None, seed: int, batch: int, views: int, decoupled: bool, zeros: int,
        use_labels: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    xs = _data(seed, batch, 4, views)
    w = torch.rand(batch, generator=g, dtype=torch.float64) + 0.1
    w[: min(zeros, batch - 1)] = 0  # a zero weight removes those samples' anchors (they stay candidates)
    labels = torch.randint(0, 3, (batch,), generator=g) if use_labels else None
    _assert_same(lambda *v: F.supcon(*v, labels=labels, weights=w, decoupled=decoupled, temperature=0.3,
                                     backend=backend, block_size=block),
                 lambda *v: dense_multiview(list(v), labels, 0.3, decoupled=decoupled, weights=w), xs)


def test_a_zero_weight_removes_an_anchor_but_keeps_it_as_a_candidate() -> None:
    xs = _data(6, 5, 3, 2)
    w = torch.tensor([0.0, 1, 1, 1, 1], dtype=torch.float64)
    z = Fn.normalize(torch.cat(xs), dim=1)
    s = (z @ z.T / 0.1).fill_diagonal_(-math.inf)
    target = torch.arange(10).roll(5)
    per_anchor = Fn.cross_entropy(s, target, reduction="none")
    keep = torch.ones(10, dtype=torch.bool)
    keep[[0, 5]] = False
    torch.testing.assert_close(F.nt_xent(*xs, weights=w), per_anchor[keep].mean())


@pytest.mark.parametrize("bad, match", [
    (torch.ones(4), r"weights must be a floating tensor of shape \(5,\)"),
    (torch.ones(5, dtype=torch.long), "weights must be a floating tensor"),
    ([1.0] * 5, "weights must be a floating tensor of shape"),
    (torch.tensor([1.0, -1, 1, 1, 1]), "weights must be finite and >= 0"),
    (torch.tensor([1.0, math.nan, 1, 1, 1]), "weights must be finite and >= 0"),
])
@pytest.mark.parametrize("name", ["nt_xent", "supcon", "dcl", "infonce", "clip"])
def test_bad_weights_are_a_value_error_naming_them(name: str, bad: object, match: str) -> None:
    xs = _data(7, 5, 3, 2)
    call = {"supcon": lambda: F.supcon(*xs, labels=torch.arange(5) % 2, weights=bad)}.get(
        name, lambda: getattr(F, name)(*xs, weights=bad))
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- label smoothing


@settings(max_examples=25)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 7), extra=st.integers(0, 4), eps=st.floats(0.0, 0.9),
       in_batch=st.booleans(), t=st.floats(0.05, 1.0))
@pytest.mark.parametrize("backend, block", BACKENDS)
def test_smoothed_infonce_is_cross_entropy_with_label_smoothing(backend: str, block: int | None, seed: int,
                                                                 batch: int, extra: int, eps: float,
                                                                 in_batch: bool, t: float) -> None:
    q, k, n = _data(seed, batch, 4, 2) + [_data(seed + 1, max(extra, 1), 4, 1)[0][:extra]]
    if not in_batch and extra == 0:
        return  # MoCo form needs negatives (a ValueError, tested elsewhere)

    def slow(q: Tensor, k: Tensor) -> Tensor:
        qn, kn, nn_ = (Fn.normalize(x, dim=1) for x in (q, k, n))
        first = qn @ kn.T if in_batch else (qn * kn).sum(1, keepdim=True)
        logits = torch.cat([first, qn @ nn_.T], dim=1) / t
        target = torch.arange(batch) if in_batch else torch.zeros(batch, dtype=torch.long)
        return Fn.cross_entropy(logits, target, label_smoothing=eps)

    _assert_same(lambda q, k: F.infonce(q, k, n if extra else None, temperature=t, label_smoothing=eps,
                                        in_batch_negatives=in_batch, backend=backend, block_size=block),
                 slow, [q, k])


@settings(max_examples=20)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 7), eps=st.floats(0.0, 0.9), theta=st.floats(-1.0, 3.0))
@pytest.mark.parametrize("backend, block", BACKENDS)
def test_smoothed_clip_is_cross_entropy_with_label_smoothing_both_ways(backend: str, block: int | None, seed: int,
                                                                        batch: int, eps: float, theta: float
                                                                        ) -> None:
    xs = _data(seed, batch, 4, 2)
    scale = torch.tensor(theta, dtype=torch.float64, requires_grad=True)

    def slow(x: Tensor, y: Tensor) -> Tensor:
        logits = Fn.normalize(x, dim=1) @ Fn.normalize(y, dim=1).T * scale.exp()
        target = torch.arange(batch)
        return (Fn.cross_entropy(logits, target, label_smoothing=eps)
                + Fn.cross_entropy(logits.T, target, label_smoothing=eps)) / 2

    fast = lambda x, y: F.clip(x, y, logit_scale=scale, label_smoothing=eps, backend=backend,  # noqa: E731
                               block_size=block)
    _assert_same(fast, slow, xs)
    (g,) = torch.autograd.grad(fast(*xs), scale)
    (h,) = torch.autograd.grad(slow(*xs), scale)
    torch.testing.assert_close(g, h, **TOL)


def test_zero_smoothing_is_the_plain_loss_and_the_module_keeps_the_option() -> None:
    xs = _data(8, 6, 4, 2)
    assert torch.equal(F.infonce(*xs, label_smoothing=0.0), F.infonce(*xs))
    assert torch.equal(F.clip(*xs, label_smoothing=0.0), F.clip(*xs))
    module = cl.get_loss("clip", label_smoothing=0.1)
    torch.testing.assert_close(module(*xs), F.clip(*xs, label_smoothing=0.1, logit_scale=module.logit_scale))
    assert cl.get_loss("infonce", label_smoothing=0.3).label_smoothing == 0.3


@pytest.mark.parametrize("call, match", [
    (lambda xs: F.infonce(*xs, label_smoothing=1.0), r"label_smoothing must be a float in \[0, 1\)"),
    (lambda xs: F.clip(*xs, label_smoothing=-0.1), "label_smoothing must be a float"),
    (lambda xs: F.clip(*xs, label_smoothing=0.1, decoupled=True), "not defined with decoupled=True"),
    (lambda xs: cl.get_loss("infonce", label_smoothing="a"), "label_smoothing must be a float"),
    (lambda xs: F.dcl(*xs, decoupled=False), "decoupled must be True"),
    (lambda xs: F.dcl(*xs, weight_sigma=0.0), "weight_sigma must be a finite float > 0"),
    (lambda xs: cl.get_loss("dcl", weight_sigma=math.inf), "weight_sigma must be a finite float > 0"),
    (lambda xs: F.nt_xent(*xs, decoupled="yes"), "decoupled must be True or False"),
])
def test_bad_options_are_a_value_error_naming_them(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        call(_data(9, 4, 3, 2))


def test_dcl_is_registered_with_its_docs_and_repr() -> None:
    assert "dcl" in cl.list_losses()
    loss = cl.get_loss("dcl", temperature=0.2, weight_sigma=0.5)
    assert isinstance(loss, cl.DCLLoss) and "weight_sigma=0.5" in repr(loss) and "decoupled=True" in repr(loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(*_data(10, 4, 3, 2))
