"""The materialised engine: builds the full similarity matrix; the executable specification.

Every other backend must agree with :func:`reference_row_stats` on values and
gradients. It costs O(M·N) memory, so use it for tests and small batches only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from contrastive.engine.multilabel import overlap_weights
from contrastive.engine.stats import RowStats, label_counts

Tensor = torch.Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the accumulation dtype for inputs of ``dtype``: float64 stays, anything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Return log Σ exp(x) over ``mask`` along ``dim``; -inf (with zero gradient) where the mask is empty."""
    nonempty = mask.any(dim=dim, keepdim=True)
    filled = x.masked_fill(~mask, float("-inf"))
    # Rows with nothing to sum get a harmless finite stand-in, so no NaN reaches the gradient.
    safe = torch.where(nonempty, filled, torch.zeros((), dtype=x.dtype, device=x.device))
    lse = torch.logsumexp(safe, dim=dim)
    return torch.where(
        nonempty.squeeze(dim), lse, torch.full((), float("-inf"), dtype=x.dtype, device=x.device)
    )


def self_mask(anchor_index: Tensor, num_candidates: int) -> Tensor:
    """Return the ``(M, N)`` boolean mask that is True at each anchor's own column."""
    columns = torch.arange(num_candidates, device=anchor_index.device)
    return (anchor_index[:, None] >= 0) & (columns[None, :] == anchor_index[:, None])


def reference_row_stats(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    anchor_index: Tensor,
    temperature: float | Tensor,
    exponents: Sequence[float] = (1.0,),
    positive_weighting: str = "binary",
) -> RowStats:
    r"""Compute :class:`RowStats` (every field, ``all_lse`` too) by materialising ``s = anchors · candidatesᵀ / τ``.

    Labels ``(M,)``/``(N,)`` are integer classes; ``(M, K)``/``(N, K)`` are multi-hot rows
    (nonzero: the sample has that label), for which j is a positive of i when they share a
    label, the own column is in neither set, and ``positive_weighting="jaccard"`` weights
    each positive by :math:`|A_i \cap A_j| / |A_i \cup A_j|` (``pos_sum``, ``pos_weight``).
    """
    dtype = compute_dtype(anchors.dtype)
    sim = anchors.to(dtype) @ candidates.to(dtype).T
    sim = sim / (temperature.to(dtype) if isinstance(temperature, Tensor) else temperature)
    own = self_mask(anchor_index, candidates.shape[0])
    if anchor_labels.dim() == 2:
        return _multilabel_stats(sim, anchor_labels, candidate_labels, own, exponents, positive_weighting)
    same = anchor_labels[:, None] == candidate_labels[None, :]
    positive = same & ~own
    negative = ~same
    neg_lse = torch.stack([masked_logsumexp(gamma * sim, negative) for gamma in exponents], dim=1)
    pos_lse = masked_logsumexp(sim, positive)
    pos_sum = torch.where(positive, sim, torch.zeros((), dtype=dtype, device=sim.device)).sum(dim=1)
    all_lse = masked_logsumexp(sim, positive | negative)
    pos_count, neg_count = label_counts(anchor_labels, candidate_labels, anchor_index)
    return RowStats(
        neg_lse, pos_lse, pos_sum, pos_count, neg_count, tuple(float(g) for g in exponents), all_lse
    )


def _multilabel_stats(sim: Tensor, anchor_labels: Tensor, candidate_labels: Tensor, own: Tensor,
                      exponents: Sequence[float], positive_weighting: str) -> RowStats:
    """The materialised statistics of multi-hot labels (own column in neither set)."""
    a_hot, c_hot = (anchor_labels != 0).to(sim.dtype), (candidate_labels != 0).to(sim.dtype)
    shared, weight = overlap_weights(a_hot @ c_hot.T, a_hot.sum(dim=1), c_hot.sum(dim=1), positive_weighting)
    positive = shared & ~own
    negative = ~shared & ~own
    weight = torch.where(positive, weight, torch.zeros((), dtype=sim.dtype, device=sim.device))
    neg_lse = torch.stack([masked_logsumexp(gamma * sim, negative) for gamma in exponents], dim=1)
    pos_lse = masked_logsumexp(sim, positive)
    zero = torch.zeros((), dtype=sim.dtype, device=sim.device)
    pos_sum = (weight * torch.where(positive, sim, zero)).sum(dim=1)
    all_lse = masked_logsumexp(sim, positive | negative)
    pos_weight = weight.sum(dim=1) if positive_weighting == "jaccard" else None
    return RowStats(neg_lse, pos_lse, pos_sum, positive.sum(dim=1), negative.sum(dim=1),
                    tuple(float(g) for g in exponents), all_lse, pos_weight)
