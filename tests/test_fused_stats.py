"""The fused split statistics (``contrastive.losses.fused_stats``) equal the reference backend.

Samplers other than uniform and ``decoupled=True`` take :class:`FusedMultiviewStats` on small
single-process CPU problems; each test compares value and gradients with ``backend="reference"``.
"""

from __future__ import annotations

import unittest.mock
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import contrastive as cl
from contrastive.engine import row_stats
from contrastive.losses import fused_stats
from contrastive.losses.base import EngineOptions

SAMPLERS = [("hard", {"beta": 1.0, "tau_plus": 0.1}), ("hard", {"beta": 0.5, "tau_plus": 0.0}),
            ("hard", {"beta": 2.5, "tau_plus": 0.2}), ("debiased", {"tau_plus": 0.1})]


def _grads(name: str, backend: str, views: list[torch.Tensor], labels, weights, **options):  # noqa: ANN001, ANN202
    loss = cl.get_loss(name, backend=backend, **options)
    leaves = [v.detach().clone().requires_grad_() for v in views]
    kwargs = {"weights": weights}
    if labels is not None:
        kwargs["labels"] = labels
    value = loss(*leaves, **kwargs)
    return value.detach(), [g.detach() for g in torch.autograd.grad(value, leaves)]


def _assert_matches(name: str, views, labels=None, weights=None, tol: float = 1e-10, **options) -> None:  # noqa: ANN001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.NoPositiveWarning)
        got = _grads(name, "auto", views, labels, weights, **options)
        want = _grads(name, "reference", views, labels, weights, **options)
    torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


def _views(seed: int, n_views: int, batch: int, dim: int, dtype=torch.float64) -> list[torch.Tensor]:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=dtype) * 3 for _ in range(n_views)]


def test_samplers_and_decoupled_take_the_fused_statistics() -> None:
    """A small problem with the hard sampler (and with decoupled) calls the Function, not the engine."""
    calls = []
    original = fused_stats.FusedMultiviewStats.apply
    with unittest.mock.patch.object(fused_stats.FusedMultiviewStats, "apply",
                                    side_effect=lambda *a: calls.append(1) or original(*a)), \
            unittest.mock.patch("contrastive.losses.supcon.multiview_stats", side_effect=AssertionError):
        cl.get_loss("nt_xent", sampler="hard")(*_views(0, 2, 8, 4, torch.float32))
        cl.get_loss("dcl")(*_views(0, 2, 8, 4, torch.float32))
        cl.get_loss("supcon", sampler="debiased")(*_views(0, 2, 8, 4, torch.float32), labels=torch.arange(8) % 3)
    assert calls == [1, 1, 1]


@pytest.mark.parametrize(("sampler", "params"), SAMPLERS)
@given(seed=st.integers(0, 2**16), n_views=st.integers(2, 4), batch=st.integers(1, 9), dim=st.integers(1, 6),
       temperature=st.floats(0.1, 2.0), weighted=st.booleans())
def test_nt_xent_with_a_sampler_equals_reference(sampler: str, params: dict, seed: int, n_views: int, batch: int,
                                                 dim: int, temperature: float, weighted: bool) -> None:
    """Pair positives (2-4 views), any sampler, optional per-sample weights: value and gradients."""
    weights = torch.rand(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    _assert_matches("nt_xent", _views(seed, n_views, batch, dim), weights=weights if weighted else None,
                    temperature=temperature, sampler=cl.get_sampler(sampler, **params))


@pytest.mark.parametrize(("sampler", "params"), SAMPLERS)
@given(seed=st.integers(0, 2**16), n_views=st.integers(1, 3), batch=st.integers(2, 10), classes=st.integers(1, 12))
def test_supcon_with_a_sampler_equals_reference(sampler: str, params: dict, seed: int, n_views: int, batch: int,
                                                classes: int) -> None:
    """Class positives (classes seen once, anchors without a positive or without a negative included)."""
    labels = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed))
    _assert_matches("supcon", _views(seed, n_views, batch, 5), labels, temperature=0.2,
                    sampler=cl.get_sampler(sampler, **params))


@given(seed=st.integers(0, 2**16), n_views=st.integers(1, 3), batch=st.integers(2, 10), classes=st.integers(1, 6),
       weight_sigma=st.one_of(st.none(), st.floats(0.2, 2.0)))
def test_dcl_and_decoupled_supcon_equal_reference(seed: int, n_views: int, batch: int, classes: int,
                                                  weight_sigma: float | None) -> None:
    """DCL / DCLW (with and without labels) and decoupled SupCon: value and gradients."""
    views = _views(seed, max(n_views, 2), batch, 4)
    _assert_matches("dcl", views, temperature=0.3, weight_sigma=weight_sigma)
    labels = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed))
    _assert_matches("dcl", _views(seed, n_views, batch, 4), labels, temperature=0.3, weight_sigma=weight_sigma)
    _assert_matches("supcon", _views(seed, n_views, batch, 4), labels, temperature=0.3, decoupled=True,
                    sampler="debiased")


def test_statistics_equal_the_engine_row_stats() -> None:
    """Every RowStats field (counts included) equals row_stats of the normalised rows, for a third exponent."""
    z = torch.randn(12, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    for given in (None, labels):
        exponents = (0.5, 1.5, 3.0)
        got = fused_stats.fused_multiview_stats(z, given, 0.25, 2, exponents)
        ids = torch.arange(6) if given is None else given
        want = row_stats(torch.nn.functional.normalize(z, dim=1), None, ids.repeat(2), temperature=0.25,
                         exponents=exponents, backend="reference")
        for field in ("neg_lse", "pos_lse", "pos_sum", "pos_count", "neg_count"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field), rtol=1e-12, atol=1e-12)


def test_float32_and_half_inputs() -> None:
    """float32 agrees at float32 tolerance; fp16 rows are computed in float32 (a zero row keeps a zero gradient)."""
    views = _views(5, 2, 16, 8, torch.float32)
    _assert_matches("nt_xent", views, tol=2e-5, sampler="hard")
    half = [v.half() for v in views]
    half[0][3] = 0
    value, grads = _grads("nt_xent", "auto", half, None, None, sampler="hard")
    want, _ = _grads("nt_xent", "reference", [v.float() for v in half], None, None, sampler="hard")
    assert value.dtype == torch.float32 and grads[0].dtype == torch.float16
    torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5)
    assert torch.all(grads[0][3] == 0) and all(torch.isfinite(g).all() for g in grads)


def test_what_leaves_the_fused_statistics() -> None:
    """Unnormalised rows, tensor temperatures, exponents past the direct limit, blocks, large problems: not fused."""
    x = torch.randn(4, 3)
    hard = (1.0, 2.0)
    hard_options = EngineOptions(sampler="hard")
    assert fused_stats.fused_stats_applies(hard_options, 0.1, hard, 64, x)
    assert not fused_stats.fused_stats_applies(EngineOptions(), 0.1, (1.0,), 64, x)  # uniform: FusedMultiview
    assert fused_stats.fused_stats_applies(EngineOptions(decoupled=True), 0.1, (1.0,), 64, x)
    assert not fused_stats.fused_stats_applies(hard_options, 0.04, hard, 64, x)  # 2/0.04 = 50 > 40
    assert not fused_stats.fused_stats_applies(EngineOptions(sampler="hard", normalize=False), 0.1, hard, 64, x)
    assert not fused_stats.fused_stats_applies(hard_options, torch.tensor(0.1), hard, 64, x)
    assert not fused_stats.fused_stats_applies(EngineOptions(sampler="hard", block_size=8), 0.1, hard, 64, x)
    assert not fused_stats.fused_stats_applies(EngineOptions(sampler="hard", backend="reference"), 0.1, hard, 64, x)
    assert fused_stats.fused_stats_applies(hard_options, 0.1, hard, 2048, x)
    assert not fused_stats.fused_stats_applies(hard_options, 0.1, hard, 2049, x)
    assert not fused_stats.fused_stats_applies(hard_options, 0.1, hard, 1, x)
    # below the direct limit's temperature the engine's shifted exponentials take over, equal to the reference
    _assert_matches("nt_xent", _views(1, 2, 6, 4), temperature=0.03, sampler="hard")


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize(("sampler", "params"), SAMPLERS + [("uniform", {})])
def test_known_counts_skip_the_guards_without_changing_the_losses(sampler: str, params: dict,
                                                                  decoupled: bool) -> None:
    """Pair positives carry known_counts equal to the count tensors; the guard-free losses equal the guarded ones."""
    from contrastive.losses.base import anchor_losses

    z = torch.randn(3 * 5, 4, dtype=torch.float64, requires_grad=True)
    stats = fused_stats.fused_multiview_stats(z, None, 0.3, 3, cl.get_sampler(sampler, **params).exponents)
    assert stats.known_counts == (2, 12)
    assert torch.all(stats.pos_count == 2) and torch.all(stats.neg_count == 12)
    assert fused_stats.fused_multiview_stats(z, torch.arange(5) % 2, 0.3, 3, (1.0,)).known_counts is None
    instance = cl.get_sampler(sampler, **params)
    fast, valid = anchor_losses(stats, instance, 0.3, decoupled=decoupled)
    slow, slow_valid = anchor_losses(stats._replace(known_counts=None), instance, 0.3, decoupled=decoupled)
    assert torch.equal(valid, slow_valid) and bool(valid.all())
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(fast.sum(), z, retain_graph=True)[0],
                               torch.autograd.grad(slow.sum(), z)[0],
                               rtol=1e-12, atol=1e-12)
