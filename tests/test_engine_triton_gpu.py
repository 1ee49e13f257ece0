"""The compiled Triton kernels on CUDA: the interpreter's checks at larger shapes and in half precision.

Skipped without CUDA (and under ``TRITON_INTERPRET=1``, where ``test_engine_triton.py`` runs).

Documented tolerances, relative to max(1, largest magnitude), against the fp64 reference
on the same (rounded) inputs:

* fp32: 2e-4 on values and gradients (exact fp32 dots: ``tl.dot`` uses IEEE fp32 unless
  ``torch.set_float32_matmul_precision`` allows TF32).
* bf16: values 2e-3, gradients 3e-2 — the statistics accumulate in fp32, but the backward
  rounds dS to bf16 before its tensor-core product (as flash attention does) and the
  gradients are returned in bf16 (8 significant bits, relative rounding 4e-3).
* fp16: values 2e-3, gradients 4e-3 (11 significant bits).
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("the compiled Triton kernels need a CUDA device", allow_module_level=True)
pytest.importorskip("triton")

from contrastive.engine import triton as triton_engine  # noqa: E402

if triton_engine.interpreter_enabled():
    pytest.skip(
        "TRITON_INTERPRET is set: kernels would be interpreted, not compiled", allow_module_level=True
    )

from contrastive.functional import clip, infonce, nt_xent, supcon  # noqa: E402
from tests.strategies import gaussian  # noqa: E402
from tests.test_engine_triton import (  # noqa: E402
    FP32_TOLERANCE,
    SAMPLERS,
    check_against_reference,
    check_loss,
    problem,
    routed_to_triton,
)

CUDA = torch.device("cuda")
#: (value tolerance, gradient tolerance) per input dtype; see the module docstring.
TOLERANCE = {
    torch.float32: (FP32_TOLERANCE, FP32_TOLERANCE),
    torch.bfloat16: (2e-3, 3e-2),
    torch.float16: (2e-3, 4e-3),
}
DTYPES = list(TOLERANCE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "case",
    [
        problem(1000, 3001, 128, exponents=(1.0,)),
        problem(777, 2050, 768, exponents=(0.5, 1.5)),
        problem(513, 1200, 1030, exponents=(1.0, 2.0, 0.0), classes=50),  # D past 1024, not a power of two
        problem(2049, 2049, 256, symmetric=True, exponents=(1.0,), classes=1024),
        problem(1500, 1500, 70, symmetric=True, exponents=(1.0, 2.0), classes=3),
        problem(300, 700, 96, exponents=(1.0, 0.0, 0.5, 2.0, 1.5), temperature=0.05),
    ],
    ids=["general", "general-hard", "wide-D", "symmetric", "symmetric-few-classes", "five-exponents"],
)
def test_compiled_row_stats_equal_the_reference(case, dtype: torch.dtype) -> None:
    value_tol, grad_tol = TOLERANCE[dtype]
    check_against_reference(case, dtype, CUDA, value_tol, grad_tol)


@pytest.mark.parametrize("block", [16, 32, 128])
def test_compiled_row_stats_do_not_depend_on_the_tile_size(block: int) -> None:
    case = problem(333, 517, 200, exponents=(1.0, 2.0), block=block)
    check_against_reference(case, torch.float32, CUDA, FP32_TOLERANCE, FP32_TOLERANCE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_compiled_losses_and_samplers_equal_the_reference(sampler: str, dtype: torch.dtype) -> None:
    _, grad_tol = TOLERANCE[dtype]
    s = SAMPLERS[sampler]
    views = [gaussian((700, 128), k) for k in (1, 2)]
    y = torch.arange(700) % 37
    q, k, extra = gaussian((600, 256), 3), gaussian((600, 256), 4), gaussian((1000, 256), 5)
    with routed_to_triton() as calls:
        check_loss(
            lambda *v, backend: nt_xent(*v, temperature=0.1, sampler=s, backend=backend),
            views,
            calls,
            dtype,
            grad_tol,
        )
        check_loss(
            lambda *v, backend: supcon(*v, labels=y, temperature=0.1, sampler=s, backend=backend),
            views,
            calls,
            dtype,
            grad_tol,
        )
        check_loss(
            lambda q, k, n, backend: infonce(q, k, n, temperature=0.07, sampler=s, backend=backend),
            [q, k, extra],
            calls,
            dtype,
            grad_tol,
        )
        check_loss(
            lambda i, t, theta, backend: clip(i, t, logit_scale=theta, sampler=s, backend=backend),
            [q, k, torch.tensor(2.6, dtype=torch.float64)],
            calls,
            dtype,
            grad_tol,
        )


def test_compiled_kernels_keep_memory_linear_in_the_batch() -> None:
    z = torch.nn.functional.normalize(torch.randn(32768, 128, device=CUDA, dtype=torch.bfloat16), dim=1)
    z.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with routed_to_triton() as calls:
        nt_xent(z[:16384], z[16384:], temperature=0.1, backend="triton").backward()
    assert calls["SymmetricTritonRowStats"] == 1
    torch.cuda.synchronize()
    # A materialised 32k x 32k fp32 matrix alone would be 4 GiB; the engine needs O(N·D).
    assert torch.cuda.max_memory_allocated() - base < 256 * 2**20


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "tiles", ["columns=atomic", "columns=atomic,block_m=128,num_warps=8,backward_warps=4"]
)
def test_compiled_atomic_columns_equal_the_reference(
    tiles: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRASTIVE_TRITON_TILES", tiles)
    value_tol, grad_tol = TOLERANCE[dtype]
    case = problem(1000, 3001, 256, exponents=(1.0, 2.0))
    check_against_reference(case, dtype, CUDA, value_tol, grad_tol)
