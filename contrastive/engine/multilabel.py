r"""Multi-hot labels: positives of anchors that share at least one label, tile by tile.

With label sets :math:`A_i` (a multi-hot row per sample), candidate j is a positive of
anchor i when :math:`A_i \cap A_j \ne \emptyset` and a negative otherwise; the anchor's own
column is in neither set, so a row with no label has no positive (and is a negative of
every other anchor). A tile's intersection counts are one small matmul of label rows,
``A[I] @ A[J]ᵀ`` (exact in floating point for fewer than 2²⁴ labels); nothing M x N is kept.

``positive_weighting="jaccard"`` weights positive j of anchor i by
:math:`w_{ij} = |A_i \cap A_j| / |A_i \cup A_j|` (``"binary"``: :math:`w_{ij} = 1`).
The counts (:math:`|P(i)|`, :math:`|N(i)|`, :math:`\sum_p w_{ip}`) depend on the labels
only; ``pos_sum`` :math:`= \sum_p w_{ip} s_{ip} = \langle a_i, \sum_p w_{ip} c_p\rangle/\tau`
comes from the weighted candidate sums of :class:`WeightedCandidates`, whose backward
recomputes the weight tiles. Nothing reads a value back from the device.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
#: How positives are weighted (multi-hot labels; integer labels share their one label fully).
WEIGHTINGS = ("binary", "jaccard")
#: Label bits per int64 word of the Triton kernels' bitsets (63: the sign bit stays clear).
WORD_BITS = 63


def overlap_weights(intersection: Tensor, a_sizes: Tensor, c_sizes: Tensor, weighting: str
                    ) -> tuple[Tensor, Tensor]:
    """Return ``(shared, w)`` of intersection counts: whether a pair shares a label, and its weight (0 if not)."""
    shared = intersection > 0
    if weighting == "binary":
        return shared, shared.to(intersection.dtype)
    union = (a_sizes[:, None] + c_sizes[None, :] - intersection).clamp(min=1)
    return shared, torch.where(shared, intersection / union, torch.zeros((), dtype=union.dtype,
                                                                         device=union.device))


def multi_hot(labels: Tensor, dtype: torch.dtype) -> Tensor:
    """Return multi-hot ``labels`` (any dtype, nonzero: the label is present) as 0/1 in ``dtype``."""
    return (labels != 0).to(dtype)


def pack_bits(labels: Tensor) -> Tensor:
    """Return multi-hot ``(n, K)`` labels as ``(n, ⌈K/63⌉)`` int64 bitsets (bit k % 63 of word k // 63)."""
    n, k = labels.shape
    words = max(1, -(-k // WORD_BITS))
    bits = torch.nn.functional.pad((labels != 0).long(), (0, words * WORD_BITS - k))
    powers = torch.arange(WORD_BITS, device=labels.device)
    # distinct powers of two below 2^63 add up without overflow: the sum is the bitwise or
    return (bits.view(n, words, WORD_BITS) << powers).sum(dim=2)


class MultiLabelStructure:
    """Positive sets of multi-hot labels, computed tile by tile (the twin of ``LabelStructure``).

    ``a_hot`` ``(M, K)`` and ``c_hot`` ``(N, K)`` are 0/1 in the accumulation dtype;
    ``self_col[i]`` is anchor i's own column (-1: none); ``block`` is the tile edge.
    """

    def __init__(self, a_hot: Tensor, c_hot: Tensor, self_col: Tensor, weighting: str, block: int) -> None:
        """Hold the labels, their set sizes and the own columns."""
        self.a_hot, self.c_hot, self.self_col = a_hot, c_hot, self_col
        self.weighting, self.block = weighting, block
        self.a_sizes, self.c_sizes = a_hot.sum(dim=1), c_hot.sum(dim=1)

    def tiles(self):  # noqa: ANN201
        """Yield ``(rows, cols, positive, negative, w)`` per tile; ``w`` is 0 outside the positives."""
        m, n, b = self.a_hot.shape[0], self.c_hot.shape[0], self.block
        for i0 in range(0, m, b):
            rows = slice(i0, i0 + b)
            own = self.self_col[rows, None]
            for j0 in range(0, n, b):
                cols = slice(j0, j0 + b)
                shared, w = overlap_weights(self.a_hot[rows] @ self.c_hot[cols].T, self.a_sizes[rows],
                                            self.c_sizes[cols], self.weighting)
                other = own != torch.arange(j0, j0 + shared.shape[1], device=own.device)[None, :]
                positive = shared & other
                yield rows, cols, positive, ~shared & other, w * positive

    def counts(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Return ``(pos_count, neg_count, pos_weight)``; ``pos_weight`` is None for binary weights."""
        m = self.a_hot.shape[0]
        pos = torch.zeros(m, dtype=torch.long, device=self.a_hot.device)
        neg = torch.zeros_like(pos)
        weight = None if self.weighting == "binary" else self.a_hot.new_zeros(m)
        for rows, _, positive, negative, w in self.tiles():
            pos[rows] += positive.sum(dim=1)
            neg[rows] += negative.sum(dim=1)
            if weight is not None:
                weight[rows] += w.sum(dim=1)
        return pos, neg, weight

    def positive_sums(self, anchors: Tensor, candidates: Tensor, inv_tau: Tensor) -> Tensor:
        r"""Return ``pos_sum`` :math:`= \langle a_i, \sum_{j\in P(i)} w_{ij} c_j\rangle / \tau`, differentiable."""
        pooled = WeightedCandidates.apply(candidates.to(self.a_hot.dtype), self)
        return (anchors.to(self.a_hot.dtype) * pooled).sum(dim=1) * inv_tau


class WeightedCandidates(torch.autograd.Function):
    """``pooled[i] = Σ_j w_ij c_j`` over anchor i's positives, tile by tile; backward ``W[I, J]ᵀ·g[I]``."""

    @staticmethod
    def forward(ctx, candidates, structure):  # type: ignore[override]
        """Accumulate the weighted candidate rows of every tile."""
        pooled = candidates.new_zeros(structure.a_hot.shape[0], candidates.shape[1])
        for rows, cols, _, _, w in structure.tiles():
            pooled[rows].addmm_(w, candidates[cols])
        ctx.structure = structure
        ctx.shape = candidates.shape
        return pooled

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        """Recompute the weight tiles: ``dC[J] = Σ_I W[I, J]ᵀ · grad[I]``."""
        out = grad.new_zeros(ctx.shape)
        for rows, cols, _, _, w in ctx.structure.tiles():
            out[cols].addmm_(w.T, grad[rows])
        return out, None
