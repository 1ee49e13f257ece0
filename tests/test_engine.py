"""The chunked engine agrees with the materialised reference on values and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrastive.engine import RowStats, reference_row_stats, row_stats
from tests.strategies import EngineProblem, engine_problems, gaussian, seeds

# (value tolerance, gradient tolerance relative to the largest gradient) per input dtype
TOLERANCE = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (2e-4, 2e-4),
    torch.bfloat16: (2e-4, 3e-2),
    torch.float16: (2e-4, 4e-3),
}


def _inputs(problem: EngineProblem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh leaf tensors (anchors, candidates, temperature) that require grad."""
    anchors = problem.anchors.clone().requires_grad_()
    candidates = anchors if problem.symmetric else problem.candidates.clone().requires_grad_()
    temperature = torch.tensor(problem.temperature, dtype=torch.float64, requires_grad=True)
    return anchors, candidates, temperature


def _weighted_sum(stats: RowStats, seed: int) -> torch.Tensor:
    """A scalar that touches every statistic with random weights (skipping empty sets)."""

    def finite(x: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype))

    w = gaussian((stats.neg_lse.numel() + 2 * stats.pos_lse.numel(),), seed, dtype=stats.neg_lse.dtype)
    k = stats.neg_lse.numel()
    m = stats.pos_lse.numel()
    return (
        (finite(stats.neg_lse).flatten() * w[:k]).sum()
        + (finite(stats.pos_lse) * w[k : k + m]).sum()
        + (stats.pos_sum * w[k + m :]).sum()
    )


def _run(problem: EngineProblem, backend: str, seed: int) -> tuple[RowStats, list[torch.Tensor]]:
    """Row statistics and the gradients of a random scalar of them for ``backend``."""
    anchors, candidates, temperature = _inputs(problem)
    stats = row_stats(
        anchors,
        candidates,
        problem.anchor_labels,
        problem.candidate_labels,
        problem.anchor_index,
        temperature,
        problem.exponents,
        backend=backend,
        block_size=problem.block_size,
    )
    leaves = [anchors, temperature] + ([] if problem.symmetric else [candidates])
    return stats, list(torch.autograd.grad(_weighted_sum(stats, seed), leaves))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """Assert equality up to ``rtol`` times the larger magnitude (and equal infinities)."""
    a, b = a.detach().double(), b.detach().double()
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    a, b = a[torch.isfinite(a)], b[torch.isfinite(b)]
    if a.numel() == 0:
        return
    scale = max(1.0, float(a.abs().max()), float(b.abs().max()))
    assert float((a - b).abs().max()) <= rtol * scale


@given(problem=engine_problems(), seed=seeds())
def test_chunked_equals_reference_on_values_and_gradients(problem: EngineProblem, seed: int) -> None:
    ref, ref_grads = _run(problem, "reference", seed)
    out, out_grads = _run(problem, "chunked", seed)
    value_tol, grad_tol = TOLERANCE[problem.anchors.dtype]
    for name in ("neg_lse", "pos_lse", "pos_sum"):
        _close(getattr(out, name), getattr(ref, name), value_tol)
    assert torch.equal(out.pos_count, ref.pos_count) and torch.equal(out.neg_count, ref.neg_count)
    for g_out, g_ref in zip(out_grads, ref_grads, strict=True):
        assert g_out.dtype == g_ref.dtype
        _close(g_out, g_ref, grad_tol)


@given(problem=engine_problems(dtype=st.just(torch.float64), max_rows=7, max_dim=3))
def test_chunked_gradients_pass_gradcheck_in_float64(problem: EngineProblem) -> None:
    anchors, candidates, temperature = _inputs(problem)

    def scalar(a: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        stats = row_stats(
            a,
            a if problem.symmetric else c,
            problem.anchor_labels,
            problem.candidate_labels,
            problem.anchor_index,
            t,
            problem.exponents,
            backend="chunked",
            block_size=problem.block_size,
        )
        return _weighted_sum(stats, 0)

    assert torch.autograd.gradcheck(
        scalar, (anchors, candidates.detach().clone().requires_grad_(), temperature)
    )


def test_counts_match_the_masks() -> None:
    z = gaussian((6, 3), 0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    stats = row_stats(z, z, labels)
    assert stats.pos_count.tolist() == [1, 1, 2, 2, 2, 0]
    assert stats.neg_count.tolist() == [4, 4, 3, 3, 3, 5]


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_empty_sets_are_minus_infinity_with_finite_gradients(backend: str) -> None:
    z = gaussian((5, 3), 1).requires_grad_()
    for labels in (torch.zeros(5, dtype=torch.long), torch.arange(5)):
        stats = row_stats(z, z, labels, backend=backend, block_size=2)
        assert torch.isfinite(stats.neg_lse).all() or torch.isneginf(stats.neg_lse).all()
        loss = _weighted_sum(stats, 3)
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32_and_returns_input_dtype_gradients(dtype: torch.dtype) -> None:
    z = gaussian((9, 4), 2, dtype=dtype).requires_grad_()
    stats = row_stats(z, z, torch.arange(9) % 3, temperature=0.5, block_size=4)
    assert stats.neg_lse.dtype == torch.float32
    (grad,) = torch.autograd.grad(_weighted_sum(stats, 1), z)
    assert grad.dtype == dtype and torch.isfinite(grad).all()


def test_learnable_temperature_gets_the_same_gradient_from_both_backends() -> None:
    z = gaussian((7, 3), 4)
    grads = []
    for backend in ("reference", "chunked"):
        t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        stats = row_stats(z, z, torch.arange(7) % 2, temperature=t, backend=backend, block_size=3)
        grads.append(torch.autograd.grad(_weighted_sum(stats, 5), t)[0])
    assert torch.allclose(grads[0], grads[1], rtol=1e-10)


def test_the_symmetric_path_equals_the_general_path() -> None:
    z = gaussian((11, 4), 6)
    labels = torch.arange(11) % 4
    sym = row_stats(z, z, labels, block_size=3)
    general = row_stats(z, z.clone(), labels, labels, torch.arange(11), block_size=3)
    for a, b in zip(sym[:3], general[:3], strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_auto_backend_is_chunked_on_cpu_and_triton_needs_cuda_or_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    z = gaussian((4, 2), 7)
    auto = row_stats(z, z, torch.arange(4), backend="auto")
    chunked = row_stats(z, z, torch.arange(4), backend="chunked")
    assert torch.equal(auto.neg_lse, chunked.neg_lse)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="(?i)triton"):
        row_stats(z, z, torch.arange(4), backend="triton")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "cuda"}, "backend"),
        ({"block_size": 0}, "block_size"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"exponents": ()}, "exponents"),
    ],
)
def test_bad_engine_options_raise_value_error(kwargs: dict, match: str) -> None:
    z = gaussian((4, 2), 8)
    with pytest.raises(ValueError, match=match):
        row_stats(z, z, torch.arange(4), **kwargs)


def test_mismatched_engine_inputs_raise_value_error() -> None:
    z = gaussian((4, 2), 9)
    with pytest.raises(ValueError, match="anchor_labels"):
        row_stats(z, z, torch.arange(3))
    with pytest.raises(ValueError, match="last dimension"):
        row_stats(z, gaussian((4, 3), 1), torch.arange(4), torch.arange(4))
    with pytest.raises(ValueError, match="anchor_index"):
        row_stats(z, z, torch.arange(4), torch.arange(4), torch.tensor([0, 1, 2, 9]))


def test_reference_backend_is_the_exported_function() -> None:
    z = gaussian((5, 2), 10)
    labels = torch.arange(5) % 2
    a = reference_row_stats(z, z, labels, labels, torch.arange(5), 0.5)
    b = row_stats(z, z, labels, temperature=0.5, backend="reference")
    assert torch.equal(a.neg_lse, b.neg_lse)
