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

    parts = [x for x in (stats.neg_lse, stats.pos_lse, stats.all_lse) if x is not None] + [stats.pos_sum]
    w = gaussian((sum(x.numel() for x in parts),), seed, dtype=stats.pos_sum.dtype)
    total, start = 0.0, 0
    for x in parts:
        total = total + (finite(x).flatten() * w[start : start + x.numel()]).sum()
        start += x.numel()
    return total


def _call(problem: EngineProblem, anchors: torch.Tensor, candidates: torch.Tensor, temperature: object,
          backend: str, **options: object) -> RowStats:
    """``row_stats`` of ``problem``: symmetric problems pass ``candidates=None``."""
    if problem.symmetric:
        return row_stats(anchors, None, problem.anchor_labels, temperature=temperature,
                         exponents=problem.exponents, backend=backend, **options)
    return row_stats(anchors, candidates, problem.anchor_labels, problem.candidate_labels,
                     anchor_index=problem.anchor_index, temperature=temperature, exponents=problem.exponents,
                     backend=backend, **options)


def _run(problem: EngineProblem, backend: str, seed: int, **options: object
         ) -> tuple[RowStats, list[torch.Tensor]]:
    """Row statistics and the gradients of a random scalar of them for ``backend``."""
    anchors, candidates, temperature = _inputs(problem)
    stats = _call(problem, anchors, candidates, temperature, backend, **options)
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


def _agree(problem: EngineProblem, seed: int, joint: bool, **options: object) -> None:
    """The chunked engine with ``options`` equals the reference on values, counts and gradients."""
    ref, ref_grads = _run(problem, "reference", seed, joint=joint)
    out, out_grads = _run(problem, "chunked", seed, joint=joint, **options)
    value_tol, grad_tol = TOLERANCE[problem.anchors.dtype]
    for name in ("all_lse",) if joint else ("neg_lse", "pos_lse"):
        _close(getattr(out, name), getattr(ref, name), value_tol)
    _close(out.pos_sum, ref.pos_sum, value_tol)
    assert (out.neg_lse is None) == (out.pos_lse is None) == joint == (out.all_lse is not None)
    assert torch.equal(out.pos_count, ref.pos_count) and torch.equal(out.neg_count, ref.neg_count)
    for g_out, g_ref in zip(out_grads, ref_grads, strict=True):
        assert g_out.dtype == g_ref.dtype
        _close(g_out, g_ref, grad_tol)


@given(problem=engine_problems(), seed=seeds(), joint=st.booleans())
def test_chunked_tiles_equal_reference_on_values_and_gradients(
    problem: EngineProblem, seed: int, joint: bool
) -> None:
    _agree(problem, seed, joint, block_size=problem.block_size)


@given(problem=engine_problems(), seed=seeds(), joint=st.booleans(), known_bound=st.booleans())
def test_kept_single_tile_equals_reference_direct_and_shifted(
    problem: EngineProblem, seed: int, joint: bool, known_bound: bool
) -> None:
    # block_size=None keeps small problems as one tile; a true norm bound lets small |s| use direct
    # exponentials without reading the data, and validate_args=False without one uses shifted ones
    sides = [problem.anchors] + ([] if problem.symmetric else [problem.candidates])
    bound = max(float(x.double().norm(dim=1).max()) if x.numel() else 0.0 for x in sides) * 1.001
    options = {"norm_bound": bound} if known_bound else {"validate_args": False}
    _agree(problem, seed, joint, **options)


@given(problem=engine_problems(dtype=st.sampled_from([torch.float32, torch.float64])), seed=seeds(),
       joint=st.booleans())
def test_chunked_without_validation_equals_reference(problem: EngineProblem, seed: int, joint: bool) -> None:
    _agree(problem, seed, joint, block_size=problem.block_size, validate_args=False)


@given(problem=engine_problems(dtype=st.just(torch.float64), max_rows=7, max_dim=3))
def test_chunked_gradients_pass_gradcheck_in_float64(problem: EngineProblem) -> None:
    anchors, candidates, temperature = _inputs(problem)

    def scalar(a: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sum(
            _weighted_sum(_call(problem, a, c, t, "chunked", block_size=block, joint=joint), 0)
            for joint in (False, True) for block in (problem.block_size, None)
        )

    assert torch.autograd.gradcheck(
        scalar, (anchors, candidates.detach().clone().requires_grad_(), temperature)
    )


def test_counts_match_the_masks() -> None:
    z = gaussian((6, 3), 0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    stats = row_stats(z, None, labels)
    assert stats.pos_count.tolist() == [1, 1, 2, 2, 2, 0]
    assert stats.neg_count.tolist() == [4, 4, 3, 3, 3, 5]


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_empty_sets_are_minus_infinity_with_finite_gradients(backend: str) -> None:
    z = gaussian((5, 3), 1).requires_grad_()
    for labels in (torch.zeros(5, dtype=torch.long), torch.arange(5)):
        stats = row_stats(z, None, labels, backend=backend, block_size=2)
        assert torch.isfinite(stats.neg_lse).all() or torch.isneginf(stats.neg_lse).all()
        loss = _weighted_sum(stats, 3)
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32_and_returns_input_dtype_gradients(dtype: torch.dtype) -> None:
    z = gaussian((9, 4), 2, dtype=dtype).requires_grad_()
    stats = row_stats(z, None, torch.arange(9) % 3, temperature=0.5, block_size=4)
    assert stats.neg_lse.dtype == torch.float32
    (grad,) = torch.autograd.grad(_weighted_sum(stats, 1), z)
    assert grad.dtype == dtype and torch.isfinite(grad).all()


def test_learnable_temperature_gets_the_same_gradient_from_both_backends() -> None:
    z = gaussian((7, 3), 4)
    grads = []
    for backend in ("reference", "chunked"):
        t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        stats = row_stats(z, None, torch.arange(7) % 2, temperature=t, backend=backend, block_size=3)
        grads.append(torch.autograd.grad(_weighted_sum(stats, 5), t)[0])
    assert torch.allclose(grads[0], grads[1], rtol=1e-10)


@pytest.mark.parametrize("block", [3, None])
def test_the_symmetric_path_equals_the_general_path_with_own_columns(block: int | None) -> None:
    z = gaussian((11, 4), 6)
    labels = torch.arange(11) % 4
    sym = row_stats(z, None, labels, block_size=block)
    general = row_stats(z, z.clone(), labels, labels, anchor_index=torch.arange(11), block_size=block)
    for a, b in zip(sym[:5], general[:5], strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_self_similarity_is_explicit_not_by_identity() -> None:
    z = gaussian((8, 3), 11)
    labels = torch.arange(8) % 3
    same_object = row_stats(z, z, labels)
    equal_copy = row_stats(z, z.clone(), labels)
    against_itself = row_stats(z, None, labels)
    # two sets that happen to be equal: each anchor's own column is one of its positives
    assert torch.equal(same_object.pos_count, equal_copy.pos_count)
    assert torch.allclose(same_object.pos_lse, equal_copy.pos_lse)
    assert torch.equal(same_object.pos_count, against_itself.pos_count + 1)
    with pytest.raises(ValueError, match="candidates=None"):
        row_stats(z, None, labels, anchor_index=torch.arange(8))


def test_auto_backend_is_chunked_on_cpu_and_triton_needs_cuda_or_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    z = gaussian((4, 2), 7)
    auto = row_stats(z, None, torch.arange(4), backend="auto")
    chunked = row_stats(z, None, torch.arange(4), backend="chunked")
    assert torch.equal(auto.neg_lse, chunked.neg_lse)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="(?i)triton"):
        row_stats(z, None, torch.arange(4), backend="triton")


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
        row_stats(z, None, torch.arange(4), **kwargs)


def test_mismatched_engine_inputs_raise_value_error() -> None:
    z = gaussian((4, 2), 9)
    with pytest.raises(ValueError, match="anchor_labels"):
        row_stats(z, z, torch.arange(3))
    with pytest.raises(ValueError, match="last dimension"):
        row_stats(z, gaussian((4, 3), 1), torch.arange(4), torch.arange(4))
    with pytest.raises(ValueError, match="anchor_index"):
        row_stats(z, z, torch.arange(4), torch.arange(4), anchor_index=torch.tensor([0, 1, 2, 9]))


def test_reference_backend_is_the_exported_function() -> None:
    z = gaussian((5, 2), 10)
    labels = torch.arange(5) % 2
    a = reference_row_stats(z, z, labels, labels, torch.arange(5), 0.5)
    b = row_stats(z, None, labels, temperature=0.5, backend="reference")
    assert torch.equal(a.neg_lse, b.neg_lse)


def test_tile_plan_keeps_small_problems_and_widens_tiles_for_large_ones() -> None:
    """One kept tile below KEEP_ELEMENTS; 512 tiles; 1,024 tiles from LARGE_PROBLEM (per problem kind)."""
    from contrastive.engine.dispatch import DEFAULT_BLOCK, KEEP_ELEMENTS, LARGE_BLOCK, LARGE_PROBLEM, plan_tiles

    assert plan_tiles(None, 64, 64, 1) == (64, True)
    assert plan_tiles(None, 1024, 1024, 1)[1] is (1024 * 1024 <= KEEP_ELEMENTS)
    rows, symmetric = LARGE_PROBLEM["rows"], LARGE_PROBLEM["symmetric"]
    assert plan_tiles(None, rows - 1, rows - 1, 1) == (DEFAULT_BLOCK, False)
    assert plan_tiles(None, rows, rows, 1) == (LARGE_BLOCK, False)
    assert plan_tiles(None, rows, rows, 1, symmetric=True) == (DEFAULT_BLOCK, False)
    assert plan_tiles(None, symmetric, symmetric, 1, symmetric=True) == (LARGE_BLOCK, False)
    assert plan_tiles(96, symmetric, symmetric, 1, symmetric=True) == (96, False)  # an explicit edge wins


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40))
def test_label_groups_give_equal_ids_to_equal_labels_and_each_groups_size(values: list[int]) -> None:
    """``label_groups``: the ids of ``label_ids`` and, per entry, how many entries share its label."""
    from contrastive.engine.stats import label_groups, label_ids

    labels = torch.tensor(values)
    ids, sizes = label_groups(labels)
    assert torch.equal(ids, label_ids(labels)[0])
    assert torch.equal(ids[:, None] == ids[None, :], labels[:, None] == labels[None, :])
    assert sizes.tolist() == [values.count(v) for v in values]
