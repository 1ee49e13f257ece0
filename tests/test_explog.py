"""The CPU exponential and logarithm helpers (contrastive.engine.explog) against torch.exp / torch.log."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrastive.engine import explog


@given(values=st.lists(st.floats(-80.0, 80.0), min_size=1, max_size=300))
def test_exp_matches_torch_exp_in_float32_within_the_documented_error(values: list[float]) -> None:
    """2^(x log2 e) is within 4e-6 relative of e^x for |x| <= 80 (float32), in and out of place."""
    x = torch.tensor(values, dtype=torch.float32)
    want = torch.exp(x.double())
    for got in (explog.exp(x), explog.exp_(x.clone())):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=4e-6, atol=0.0)


def test_exp_in_float64_and_its_gradient() -> None:
    """float64: 1e-14 relative; the gradient of exp is exp (autograd through mul and exp2)."""
    x = torch.linspace(-300.0, 300.0, 1001, dtype=torch.float64, requires_grad=True)
    y = explog.exp(x)
    torch.testing.assert_close(y, torch.exp(x), rtol=1e-13, atol=0.0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(x.detach()), rtol=1e-13, atol=0.0)


def test_exp_keeps_the_special_values() -> None:
    """-inf -> 0, +inf -> inf, nan -> nan (the engine's masked entries are -inf)."""
    x = torch.tensor([float("-inf"), float("inf"), float("nan"), 0.0])
    got = explog.exp(x)
    assert got[0] == 0.0 and got[1] == float("inf") and torch.isnan(got[2]) and got[3] == 1.0


@pytest.mark.parametrize("n", [1, 127, 128, explog.XLOGY_ELEMENTS - 1, explog.XLOGY_ELEMENTS, 3 * explog.XLOGY_ELEMENTS])
def test_log_equals_torch_log_on_both_sides_of_the_threshold(n: int) -> None:
    """torch.log's values to 1 ulp (0 -> -inf), and the gradient 1/x, below and above XLOGY_ELEMENTS."""
    x = torch.rand(n, dtype=torch.float32) * 10
    x[0] = 0.0
    torch.testing.assert_close(explog.log(x), torch.log(x), rtol=1.2e-7, atol=2.4e-7)  # 1 ulp (MKL against libm)
    leaf = (x[1:] + 0.5).requires_grad_()
    explog.log(leaf).sum().backward()
    torch.testing.assert_close(leaf.grad, 1.0 / leaf.detach())


def test_other_devices_call_torch_directly() -> None:
    """Off the CPU the helpers dispatch aten exp / exp_ / log (on the meta device), on the CPU exp2 and xlogy."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    for device, want in (("meta", ["exp", "exp_", "log"]), ("cpu", ["mul", "exp2_", "mul_", "exp2_", "xlogy"])):
        x = torch.ones(4, device=device)
        with Ops() as ops:
            explog.exp(x)
            explog.exp_(x.clone() if device == "meta" else torch.ones(4))
            explog.log(x)
        assert [n for n in ops.names if n not in ("clone", "ones")] == want, (device, ops.names)
