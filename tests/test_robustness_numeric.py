"""Numerical robustness (issue 15): half-precision zero rows, huge norms, temperature bounds and types."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import contrastive as cl

LOSSES = ["nt_xent", "supcon", "infonce", "clip"]


def _call(name: str, z1: torch.Tensor, z2: torch.Tensor, **options: object) -> torch.Tensor:
    loss = cl.get_loss(name, **options)
    if name == "supcon":
        return loss(z1, z2, labels=torch.arange(z1.shape[0]) % 2)
    return loss(z1, z2)


@pytest.mark.parametrize("sampler", ["uniform", "hard", "debiased"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", LOSSES)
def test_a_half_precision_zero_row_gives_the_float32_value(name: str, dtype: torch.dtype, sampler: str) -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 8, generator=g).to(dtype), torch.randn(4, 8, generator=g).to(dtype)
    z1[0] = 0
    options = {} if name == "clip" else {"sampler": sampler}
    half = _call(name, z1.clone().requires_grad_(), z2, **options)
    full = _call(name, z1.float(), z2.float(), **options)
    assert torch.isfinite(half) and torch.allclose(half.float(), full, rtol=2e-2, atol=2e-2)
    leaf = z1.clone().requires_grad_()
    _call(name, leaf, z2, **options).backward()
    assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e19), (torch.float32, 1e30), (torch.float16, 1e3),
                                          (torch.bfloat16, 1e30), (torch.float32, 1e-30)])
@pytest.mark.parametrize("name", LOSSES)
def test_a_normalising_loss_is_scale_invariant_for_every_finite_input(
    name: str, dtype: torch.dtype, scale: float
) -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    big1, big2 = (z1 * scale).to(dtype), (z2 * scale).to(dtype)
    assert torch.isfinite(big1).all() and (big1 != 0).all()
    expected = _call(name, big1.float() / scale, big2.float() / scale)
    assert torch.allclose(_call(name, big1, big2).float(), expected, rtol=2e-2, atol=2e-2)


def test_a_temperature_whose_inverse_overflows_is_rejected_with_the_bound() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"1/temperature overflows torch.float32.*at least"):
        cl.get_loss("nt_xent", temperature=1e-40)(z, z.flip(0))
    with pytest.raises(ValueError, match="overflows"):
        cl.row_stats(z, None, temperature=torch.tensor(1e-40))
    # float64 inputs accumulate in float64, where 1/1e-40 fits
    assert torch.isfinite(cl.row_stats(z.double(), None, temperature=1e-40, joint=True).all_lse).all()


@pytest.mark.parametrize("temperature", [np.float32(0.1), np.float64(0.1), np.array(0.1), torch.tensor(0.1), 1])
def test_any_real_number_type_is_a_temperature(temperature: object) -> None:
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    value = cl.get_loss("nt_xent", temperature=temperature)(z1, z2)
    expected = cl.get_loss("nt_xent", temperature=float(temperature))(z1, z2)
    assert torch.allclose(value, expected)


def _no_positive_batches() -> dict[str, tuple]:
    g = torch.Generator().manual_seed(3)
    one = [torch.randn(1, 4, generator=g).requires_grad_() for _ in range(2)]
    distinct = torch.randn(5, 4, generator=g).requires_grad_()
    return {
        "supcon, one view, distinct labels": ("supcon", (distinct,), {"labels": torch.arange(5)}),
        "supcon, one sample, one view": ("supcon", (one[0],), {"labels": torch.tensor([7])}),
    }


@pytest.mark.parametrize("case", list(_no_positive_batches()))
def test_a_batch_without_positives_is_a_zero_loss_connected_to_the_graph_and_warns_once(case: str) -> None:
    name, views, kwargs = _no_positive_batches()[case]
    loss = cl.get_loss(name)
    with pytest.warns(cl.NoPositiveWarning, match="no anchor has a positive"):
        value = loss(*views, **kwargs)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert all(v.grad is not None and torch.equal(v.grad, torch.zeros_like(v)) for v in views)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second batch of the same loss does not warn again
        assert loss(*views, **kwargs).item() == 0.0
    with pytest.raises(ValueError, match="no anchor has a positive"):
        cl.get_loss(name, no_positive="raise")(*views, **kwargs)


@pytest.mark.parametrize("name", ["nt_xent", "infonce", "clip"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_one_sample_batch_of_paired_views_has_its_positive_and_no_negative(name: str, dtype: torch.dtype) -> None:
    """The positive is the whole denominator: log 1 = 0, to rounding.

    The loss is ``lse - s`` with ``lse = log e^s``: in float64 it is 0 to 1e-12; in float32 each
    side rounds on the scale of the logit itself (|s| = 1/0.07 = 14.3 here, one ulp = 9.5e-7), so
    the bound is 4 ulps of 14.3 (the matmul, the exponential and the logarithm each round once).
    """
    g = torch.Generator().manual_seed(4)
    z1, z2 = (torch.randn(1, 4, generator=g, dtype=dtype).requires_grad_() for _ in range(2))
    value = cl.get_loss(name)(z1, z2)
    bound = 1e-12 if dtype == torch.float64 else 4 * torch.finfo(torch.float32).eps * 16.0
    assert abs(value.item()) < bound
    value.backward()
    assert torch.isfinite(z1.grad).all()


# ---------------------------------------------------------------- the additive (spectral) losses

ADDITIVE = ["spectral", "linear_spectral"]


def _additive(name: str, z1: torch.Tensor, z2: torch.Tensor, **options: object) -> torch.Tensor:
    return getattr(cl.functional, name)(z1, z2, **options)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ADDITIVE)
def test_an_additive_loss_in_half_precision_gives_the_float32_value(name: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 32, generator=g).to(dtype), torch.randn(64, 32, generator=g).to(dtype)
    half = _additive(name, z1, z2)  # fp16 accumulation overflowed to inf for the spectral loss
    full = _additive(name, z1.float(), z2.float())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, full, rtol=1e-3, atol=1e-3)
    leaf = z1.clone().requires_grad_()
    _additive(name, leaf, z2).backward()
    assert leaf.grad.dtype == dtype and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("scale", [1e9, 1e12, 1e19, 1e25, 1e-25])
@pytest.mark.parametrize("name", ADDITIVE)
def test_an_additive_loss_is_never_nan_and_exact_where_its_value_fits(name: str, scale: float) -> None:
    """The value scales as s^2 (and s^4): float32 holds it or returns ±inf, never NaN."""
    g = torch.Generator().manual_seed(2)
    z1, z2 = (torch.randn(64, 32, generator=g) * scale for _ in range(2))
    leaves = [z1.clone().requires_grad_(), z2.clone().requires_grad_()]
    found = _additive(name, *leaves)
    truth = _additive(name, z1.double(), z2.double())
    assert not torch.isnan(found)
    if abs(truth) < 1e-30:  # below float32's normal range: it may underflow, to a finite value
        assert torch.isfinite(found)
    elif abs(truth) < torch.finfo(torch.float32).max / 2:
        torch.testing.assert_close(found.double(), truth, rtol=1e-4, atol=0.0)
        found.backward()
        exact = [v.double().requires_grad_() for v in (z1, z2)]
        _additive(name, *exact).backward()
        for leaf, e in zip(leaves, exact, strict=True):
            if torch.isfinite(e.grad).all() and e.grad.abs().max() < torch.finfo(torch.float32).max / 2:
                torch.testing.assert_close(leaf.grad.double(), e.grad, rtol=1e-3, atol=1e-3 * e.grad.abs().max())
    else:
        assert torch.isinf(found) and torch.sign(found) == torch.sign(truth)


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e20), (torch.float32, 1e38), (torch.float16, 6e4),
                                          (torch.bfloat16, 1e38)])
def test_the_spectral_norm_clip_caps_rows_of_any_finite_norm(dtype: torch.dtype, scale: float) -> None:
    from contrastive.losses.spectral import clip_norm

    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    big = [(z * scale / z.abs().max()).to(dtype) for z in (z1, z2)]
    assert all(torch.isfinite(b).all() for b in big)
    clipped = clip_norm(big[0], 2.0)
    norms = clipped.float().norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0 ** 0.5), rtol=1e-2, atol=0.0)  # was 0
    found = cl.functional.spectral(*big, mu=1.0)
    expected = cl.functional.spectral(*(b.double() for b in big), mu=1.0)
    torch.testing.assert_close(found.double(), expected, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_unit_rows_equals_the_autograd_normalisation_and_keeps_only_the_rows_and_their_norms(
    dtype: torch.dtype,
) -> None:
    """``unit_rows``' written-out backward against ``F.normalize`` in float64 (a zero row stays zero with
    a zero gradient), and its graph saves the unit rows and one inverse norm per row, nothing else."""
    from contrastive.functional import unit_rows

    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    x[3] = 0.0
    grad = torch.randn(7, 5, generator=g, dtype=torch.float64)
    ref = x.clone().requires_grad_()
    expected = torch.nn.functional.normalize(ref, dim=1)
    (expected_grad,) = torch.autograd.grad(expected, ref, grad)
    leaf = x.to(dtype).requires_grad_()
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = unit_rows(leaf, torch.float64)
    (got_grad,) = torch.autograd.grad(out, leaf, grad)
    tolerance = {"atol": 1e-12} if dtype == torch.float64 else {"atol": 2e-3 if dtype == torch.float16 else 1e-6}
    torch.testing.assert_close(out, expected.detach(), rtol=0, **tolerance)
    rows = [0, 1, 2, 4, 5, 6]  # F.normalize gives the zero row a gradient of 1/eps, unit_rows none
    torch.testing.assert_close(got_grad.double()[rows], expected_grad[rows], rtol=0, **tolerance)
    assert got_grad.dtype == dtype and got_grad[3].abs().sum() == 0
    assert sorted(t.numel() for t in saved) == [7, 35]
