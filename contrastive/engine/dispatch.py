"""``row_stats``: the one entry point of the engine, with input checks and backend dispatch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from contrastive._validation import check_temperature
from contrastive.engine.chunked import ChunkedRowStats, SymmetricChunkedRowStats
from contrastive.engine.reference import compute_dtype, reference_row_stats
from contrastive.engine.stats import RowStats, label_counts
from contrastive.engine.triton import (
    DualTritonRowStats,
    SymmetricTritonRowStats,
    TritonRowStats,
    auto_prefers_triton,
    triton_available,
)

Tensor = torch.Tensor

BACKENDS = ("auto", "reference", "chunked", "triton")
DEFAULT_BLOCK = 1024


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """Return the concrete backend for ``backend`` on ``device`` for inputs of ``dtype``.

    ``auto`` is ``triton`` for fp32/bf16/fp16 CUDA tensors when Triton imports, else ``chunked``
    (CPU tensors never reach a kernel through ``auto``, even under ``TRITON_INTERPRET=1``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" and not triton_available():
        raise ValueError(
            "backend='triton' needs the triton package (Linux x86-64: pip install triton); "
            "use backend='chunked' or 'auto'"
        )
    if backend == "auto":
        return "triton" if dtype is not None and auto_prefers_triton(device, dtype) else "chunked"
    return backend


def resolve_block_size(block_size: int | None, num_anchors: int, num_candidates: int) -> int:
    """Return the tile edge: ``block_size`` if given, else 1024 (or the whole problem when smaller)."""
    if block_size is None:
        return max(1, min(DEFAULT_BLOCK, max(num_anchors, num_candidates)))
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int or None (automatic), got {block_size!r}")
    return block_size


def _check_inputs(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    anchor_index: Tensor,
    exponents: Sequence[float],
) -> None:
    """Raise ValueError naming the first argument whose shape or dtype is inconsistent."""
    for name, x in (("anchors", anchors), ("candidates", candidates)):
        if x.dim() != 2 or not x.is_floating_point():
            raise ValueError(
                f"{name} must be a 2-D floating tensor, got shape {tuple(x.shape)} and dtype {x.dtype}"
            )
    if anchors.shape[1] != candidates.shape[1]:
        raise ValueError(
            "anchors and candidates must share their last dimension, "
            f"got {anchors.shape[1]} and {candidates.shape[1]}"
        )
    if anchors.dtype != candidates.dtype:
        raise ValueError(
            f"anchors and candidates must share a dtype, got {anchors.dtype} and {candidates.dtype}"
        )
    for name, x, n in (
        ("anchor_labels", anchor_labels, anchors.shape[0]),
        ("candidate_labels", candidate_labels, candidates.shape[0]),
        ("anchor_index", anchor_index, anchors.shape[0]),
    ):
        if x.shape != (n,) or x.dtype != torch.long:
            raise ValueError(
                f"{name} must be an int64 tensor of shape ({n},), "
                f"got shape {tuple(x.shape)} and dtype {x.dtype}"
            )
    if anchor_index.numel() and (
        int(anchor_index.max()) >= candidates.shape[0] or int(anchor_index.min()) < -1
    ):
        raise ValueError(f"anchor_index must lie in [-1, {candidates.shape[0] - 1}]")
    if len(exponents) == 0 or not all(math.isfinite(float(g)) for g in exponents):
        raise ValueError(f"exponents must be a non-empty sequence of finite floats, got {tuple(exponents)!r}")


def _inverse_temperature(temperature: float | Tensor, anchors: Tensor) -> Tensor:
    """Return 1/τ as a 0-d tensor in the accumulation dtype of ``anchors`` (differentiable if τ is)."""
    dtype = compute_dtype(anchors.dtype)
    if isinstance(temperature, Tensor):
        return 1.0 / temperature.reshape(()).to(dtype)
    return torch.tensor(1.0 / temperature, dtype=dtype, device=anchors.device)


def row_stats(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor | None = None,
    anchor_index: Tensor | None = None,
    temperature: float | Tensor = 1.0,
    exponents: Sequence[float] = (1.0,),
    backend: str = "auto",
    block_size: int | None = None,
) -> RowStats:
    """Return the :class:`RowStats` of ``s = anchors · candidatesᵀ / temperature``.

    ``anchor_index[i]`` is anchor i's own column among the candidates (excluded from
    its positives) or -1. When ``candidates is anchors``, ``candidate_labels`` and
    ``anchor_index`` default to the anchors' labels and ``arange(M)``, and the
    chunked backend uses the symmetric (upper-tile) path. Otherwise they default to
    ``anchor_labels`` (which then must fit) and "no anchor among the candidates".
    Candidates whose label no anchor carries are pure negatives (e.g. a queue).
    """
    symmetric_input = candidates is anchors
    if candidate_labels is None:
        candidate_labels = anchor_labels
    if anchor_index is None:
        anchor_index = (
            torch.arange(anchors.shape[0], device=anchors.device)
            if symmetric_input
            else torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
        )
    exponents = tuple(float(g) for g in exponents)
    _check_inputs(anchors, candidates, anchor_labels, candidate_labels, anchor_index, exponents)
    check_temperature(temperature)
    name = resolve_backend(backend, anchors.device, anchors.dtype)
    if name == "reference":
        return reference_row_stats(
            anchors, candidates, anchor_labels, candidate_labels, anchor_index, temperature, exponents
        )
    block = resolve_block_size(block_size, anchors.shape[0], candidates.shape[0])
    inv_tau = _inverse_temperature(temperature, anchors)
    symmetric = (
        symmetric_input
        and (candidate_labels is anchor_labels or torch.equal(candidate_labels, anchor_labels))
        and torch.equal(anchor_index, torch.arange(anchors.shape[0], device=anchors.device))
    )
    general, symmetric_fn = ChunkedRowStats, SymmetricChunkedRowStats
    if name == "triton":  # the kernels choose their own tiles unless block_size is given
        general, symmetric_fn, block = TritonRowStats, SymmetricTritonRowStats, block_size
    if symmetric:
        lse, pos_lse, pos_sum = symmetric_fn.apply(anchors, anchor_labels, inv_tau, exponents, block)
    else:
        lse, pos_lse, pos_sum = general.apply(
            anchors, candidates, anchor_labels, candidate_labels, anchor_index, inv_tau, exponents, block
        )
    pos_count, neg_count = label_counts(anchor_labels, candidate_labels, anchor_index)
    return RowStats(lse, pos_lse, pos_sum, pos_count, neg_count, exponents)


def dual_row_stats(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor | None = None,
    temperature: float | Tensor = 1.0,
    exponents: Sequence[float] = (1.0,),
    backend: str = "auto",
    block_size: int | None = None,
) -> tuple[RowStats, RowStats]:
    """Return the :class:`RowStats` of anchors against candidates and of candidates against anchors.

    Both directions of one similarity matrix with no self column on either side, as CLIP's
    image-to-text and text-to-image terms: equal to two :func:`row_stats` calls (the second
    with the roles swapped). The Triton backend shares one backward between the directions
    (two passes over the tiles instead of four); the others make the two calls.
    """
    if candidate_labels is None:
        candidate_labels = anchor_labels
    exponents = tuple(float(g) for g in exponents)
    no_self = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    no_self_back = torch.full((candidates.shape[0],), -1, dtype=torch.long, device=anchors.device)
    _check_inputs(anchors, candidates, anchor_labels, candidate_labels, no_self, exponents)
    check_temperature(temperature)
    if resolve_backend(backend, anchors.device, anchors.dtype) != "triton":
        # explicit "no self" both ways, also when one tensor is passed as both sides
        return (
            row_stats(anchors, candidates, anchor_labels, candidate_labels, no_self, temperature, exponents,
                      backend, block_size),
            row_stats(candidates, anchors, candidate_labels, anchor_labels, no_self_back, temperature,
                      exponents, backend, block_size),
        )
    inv_tau = _inverse_temperature(temperature, anchors)
    out = DualTritonRowStats.apply(
        anchors, candidates, anchor_labels, candidate_labels, inv_tau, exponents, block_size
    )
    counts = label_counts(anchor_labels, candidate_labels, no_self)
    back_counts = label_counts(candidate_labels, anchor_labels, no_self_back)
    return RowStats(*out[:3], *counts, exponents), RowStats(*out[3:], *back_counts, exponents)
