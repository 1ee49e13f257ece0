"""The Triton kernels compile for NVIDIA GPUs: checked ahead of time on the CPU, no GPU needed.

The interpreter tests (``test_engine_triton.py``) check what the kernels compute; these check
that each launch the engine actually makes (same arguments, constexprs and launch options,
recorded from the real launch code) compiles to a cubin for the H100 (sm_90) and A100 (sm_80),
fits the device's shared memory, and puts the half-precision dots on tensor cores. The first
run of this check found a module-level float read inside a kernel, which the interpreter
accepts and compiled Triton rejects.

The ``ci`` hypothesis profile compiles the heaviest specialisation per dtype; ``nightly``
(``HYPOTHESIS_PROFILE=nightly``) compiles every recorded specialisation for both targets.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # compiles every kernel launch: minutes on two cores

pytest.importorskip("triton")
aot = pytest.importorskip("tools.triton_aot")

if not Path(aot._cuobjdump()).with_name("ptxas").exists() or shutil.which("true") is None:
    pytest.skip("triton's NVIDIA backend tools (ptxas) are not installed", allow_module_level=True)

NIGHTLY = os.environ.get("HYPOTHESIS_PROFILE") == "nightly"
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
EXPONENTS = {"one-exponent": (1.0,), "four-exponents": (0.5, 1.0, 1.5, 2.0)}


def cases() -> Iterator[object]:
    """(dtype, dim, exponents, capability) to compile: the heaviest per dtype in ``ci``, all when nightly."""
    for dtype in DTYPES:
        for dim in (256, 20) if NIGHTLY else (256,):
            for name, exponents in EXPONENTS.items():
                if not NIGHTLY and name != "four-exponents":
                    continue
                for capability in (90, 80):
                    if NIGHTLY or capability == 90 or dtype == torch.bfloat16:
                        yield pytest.param(
                            dtype,
                            dim,
                            exponents,
                            capability,
                            id=f"{str(dtype)[6:]}-D{dim}-{name}-sm{capability}",
                        )


def test_the_recorder_sees_every_kernel_the_backward_needs() -> None:
    launches = aot.engine_launches(torch.float32, 64, (1.0, 2.0))
    kernels = [(x.kernel.removeprefix("row_stats_"), bool(x.kwargs.get("COLUMN_COEFS"))) for x in launches]
    # general: forward, rows, columns; symmetric: forward, rows with the columns' coefficients;
    # dual: two forwards, then rows and columns each with the other direction's coefficients
    assert sorted(kernels) == sorted(
        [("forward_kernel", False)] * 4
        + [("backward_rows_kernel", False), ("backward_columns_kernel", False)]
        + [("backward_rows_kernel", True)] * 2
        + [("backward_columns_kernel", True)]
    )
    assert all(launch.kwargs["enable_fp_fusion"] is True for launch in launches)


@pytest.mark.parametrize(("dtype", "dim", "exponents", "capability"), list(cases()))
def test_every_launch_compiles_fits_shared_memory_and_uses_tensor_cores(
    dtype: torch.dtype, dim: int, exponents: tuple[float, ...], capability: int
) -> None:
    launches = aot.unique(aot.engine_launches(dtype, dim, exponents))
    assert {launch.kernel for launch in launches} == {
        "row_stats_forward_kernel",
        "row_stats_backward_rows_kernel",
        "row_stats_backward_columns_kernel",
    }
    for launch, usage in zip(launches, aot.compile_usage([(x, capability) for x in launches]), strict=True):
        assert usage.shared_bytes <= aot.SHARED_MEMORY_LIMIT[capability], (launch.kernel, usage)
        assert 0 < usage.registers <= 255, (launch.kernel, usage)
        if dtype in (torch.bfloat16, torch.float16):
            expected = "wgmma" if capability == 90 else "mma"
            assert usage.tensor_cores == expected, (launch.kernel, usage)


def test_a_kernel_that_cannot_compile_is_reported() -> None:
    launch = aot.unique(aot.engine_launches(torch.float32, 32, (1.0,)))[0]
    broken = dict(launch.kwargs, BLOCK_D=24)  # tl.arange needs a power of two
    with pytest.raises(aot.KernelCompileError, match="row_stats_forward_kernel for sm_90: CompilationError"):
        aot.compile_usage([(aot.Launch(launch.kernel, launch.args, broken), 90)])


def test_the_atomic_column_mode_compiles_with_its_atomics() -> None:
    launches = aot.unique(aot.engine_launches(torch.bfloat16, 256, (1.0,), tiles="columns=atomic"))
    atomic = [x for x in launches if x.kwargs.get("ATOMIC_COLUMNS")]
    # the general and the dual backward each make one atomic row pass and no column pass
    assert len(atomic) == 2 and "row_stats_backward_columns_kernel" not in {x.kernel for x in launches}
    for usage in aot.compile_usage([(launch, 90) for launch in atomic]):
        assert usage.tensor_cores == "wgmma" and usage.shared_bytes <= aot.SHARED_MEMORY_LIMIT[90]
