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
