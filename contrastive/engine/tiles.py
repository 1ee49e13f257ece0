"""Arithmetic on one tile of the similarity matrix, shared by the chunked backends.

A tile is ``sim[I, J]`` for a block of anchors ``I`` and a block of candidates
``J``. The same tile serves the anchors of ``I`` (reductions along ``dim=1``) and,
when the matrix is symmetric, the anchors of ``J`` (reductions along ``dim=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor
NEG_INF = float("-inf")


def tile_masks(
    row_labels: Tensor, col_labels: Tensor, row_self: Tensor | None, col_start: int
) -> tuple[Tensor, Tensor | None]:
    """Return ``(same, positive)`` for a tile; ``positive`` is None when the tile holds no positive.

    ``row_self`` gives each row's own column in the full candidate set (-1 for none);
    those entries are removed from ``positive`` (they are neither positive nor negative).
    """
    same = row_labels[:, None] == col_labels[None, :]
    if not bool(same.any()):
        return same, None
    positive = same
    if row_self is not None:
        local = row_self - col_start
        inside = (row_self >= 0) & (local >= 0) & (local < col_labels.numel())
        if bool(inside.any()):
            rows = torch.nonzero(inside).squeeze(1)
            positive = same.clone()
            positive[rows, local[rows]] = False
            if not bool(positive.any()):
                return same, None
    return same, positive


def negative_logits(sim: Tensor, same: Tensor, exponents: Sequence[float]) -> list[Tensor]:
    """Return ``γ·sim`` with every non-negative entry set to -inf, one tile per exponent."""
    out = []
    for gamma in exponents:
        scaled = sim if gamma == 1.0 else sim * gamma
        out.append(scaled.masked_fill(same, NEG_INF))
    return out


def _along(vector: Tensor, dim: int) -> Tensor:
    """Shape a per-anchor vector to broadcast over a tile whose anchors run along ``1 - dim``."""
    return vector[:, None] if dim == 1 else vector[None, :]


def reduce_tile(
    sim: Tensor, negatives: list[Tensor], positive: Tensor | None, dim: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Return the tile's ``(neg_lse (b, E), pos_lse (b,), pos_sum (b,))`` along ``dim``; None without positives."""
    neg_lse = torch.stack([torch.logsumexp(x, dim=dim) for x in negatives], dim=1)
    if positive is None:
        return neg_lse, None, None
    pos_lse = torch.logsumexp(sim.masked_fill(~positive, NEG_INF), dim=dim)
    pos_sum = sim.masked_fill(~positive, 0.0).sum(dim=dim)
    return neg_lse, pos_lse, pos_sum


def grad_tile(
    sim: Tensor,
    negatives: list[Tensor],
    positive: Tensor | None,
    neg_lse: Tensor,
    pos_lse: Tensor,
    neg_coef: Tensor,
    pos_lse_coef: Tensor,
    pos_sum_coef: Tensor,
    dim: int,
) -> Tensor:
    """Return ∂loss/∂sim on the tile for anchors along ``1 - dim``.

    ``neg_lse``/``pos_lse`` must be finite (empty sets replaced by 0); ``neg_coef``
    is ∂loss/∂neg_lse already multiplied by γ, shape ``(b, E)``.
    """
    grad = None
    for e, x in enumerate(negatives):
        term = torch.exp(x - _along(neg_lse[:, e], dim)).mul_(_along(neg_coef[:, e], dim))
        grad = term if grad is None else grad.add_(term)
    if positive is not None:
        term = torch.exp(sim - _along(pos_lse, dim)).mul_(_along(pos_lse_coef, dim)).add_(_along(pos_sum_coef, dim))
        grad.add_(term.masked_fill_(~positive, 0.0))
    return grad


def finite_or_zero(x: Tensor) -> Tensor:
    """Replace the -inf of empty log-sum-exps by 0 so that ``exp(x - lse)`` stays finite."""
    return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))
