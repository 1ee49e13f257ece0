"""Arithmetic on one tile of the similarity matrix, shared by the chunked backends.

A tile is ``sim[I, J]`` for a block of anchors ``I`` and a block of candidates
``J``. The same tile serves the anchors of ``I`` (reductions along ``dim=1``) and,
when the matrix is symmetric, the anchors of ``J`` (reductions along ``dim=0``).
Every full pass over a tile costs time on CPU, so the helpers skip masks for tiles
without a shared label and fold non-negative gradient coefficients into exponents.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor
NEG_INF = float("-inf")


def any_true(mask: Tensor) -> bool:
    """Return whether a boolean tile has a True entry (a byte max, much faster than ``any`` on CPU)."""
    return bool(mask.view(torch.uint8).max()) if mask.numel() else False


def tile_masks(
    row_labels: Tensor, col_labels: Tensor, row_self: Tensor | None, col_start: int
) -> tuple[Tensor | None, Tensor | None]:
    """Return ``(same, positive)`` for a tile; None where the tile has no such entry.

    ``row_self`` gives each row's own column in the full candidate set (-1 for none);
    those entries are removed from ``positive`` (they are neither positive nor negative).
    """
    if not bool(torch.isin(row_labels, col_labels).any()):
        return None, None
    same = row_labels[:, None] == col_labels[None, :]
    positive = same
    if row_self is not None:
        local = row_self - col_start
        inside = (row_self >= 0) & (local >= 0) & (local < col_labels.numel())
        if bool(inside.any()):
            rows = torch.nonzero(inside).squeeze(1)
            positive = same.clone()
            positive[rows, local[rows]] = False
            if not any_true(positive):
                return same, None
    return same, positive


def logsumexp(x: Tensor, dim: int) -> Tensor:
    """Return log Σ exp(x) along ``dim`` (-inf for all -inf lines), in fewer passes than ``torch.logsumexp``."""
    shift = x.amax(dim=dim, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros((), dtype=x.dtype, device=x.device))
    return torch.exp(x - shift).sum(dim=dim).log_().add_(shift.squeeze(dim))


def negative_logits(sim: Tensor, same: Tensor | None, exponents: Sequence[float]) -> list[Tensor]:
    """Return ``γ·sim`` with every same-label entry set to -inf, one tile per exponent."""
    out = []
    for gamma in exponents:
        scaled = sim if gamma == 1.0 else sim * gamma
        if same is not None:
            scaled = torch.where(same, torch.full((), NEG_INF, dtype=sim.dtype, device=sim.device), scaled)
        out.append(scaled)
    return out


def _along(vector: Tensor, dim: int) -> Tensor:
    """Shape a per-anchor vector to broadcast over a tile whose anchors run along ``1 - dim``."""
    return vector[:, None] if dim == 1 else vector[None, :]


def reduce_tile(
    sim: Tensor, negatives: list[Tensor], positive: Tensor | None, dim: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Return the tile's ``(neg_lse (b, E), pos_lse (b,), pos_sum (b,))`` along ``dim``; None without positives."""
    neg_lse = torch.stack([logsumexp(x, dim=dim) for x in negatives], dim=1)
    if positive is None:
        return neg_lse, None, None
    zero = torch.zeros((), dtype=sim.dtype, device=sim.device)
    pos_lse = logsumexp(torch.where(positive, sim, zero + NEG_INF), dim=dim)
    pos_sum = torch.where(positive, sim, zero).sum(dim=dim)
    return neg_lse, pos_lse, pos_sum


def exponent_shifts(lse: Tensor, coef: Tensor) -> Tensor | None:
    """Return ``lse - log(coef)`` when every coefficient is >= 0 (so ``coef·e^{x-lse} = e^{x-shift}``), else None."""
    if bool((coef < 0).any()):
        return None
    return lse - torch.log(coef)


def grad_tile(
    sim: Tensor,
    negatives: list[Tensor],
    positive: Tensor | None,
    neg_lse: Tensor,
    neg_coef: Tensor,
    neg_shift: Tensor | None,
    pos_lse: Tensor,
    pos_lse_coef: Tensor,
    pos_sum_coef: Tensor,
    dim: int,
) -> Tensor:
    """Return ∂loss/∂sim on the tile for anchors along ``1 - dim``.

    ``neg_lse``/``pos_lse`` must be finite (empty sets replaced by 0); ``neg_coef`` is
    ∂loss/∂neg_lse times γ, shape ``(b, E)``; ``neg_shift`` its folded form or None.
    """
    grad = None
    for e, x in enumerate(negatives):
        if neg_shift is not None:
            term = torch.exp(x - _along(neg_shift[:, e], dim))
        else:
            term = torch.exp(x - _along(neg_lse[:, e], dim)).mul_(_along(neg_coef[:, e], dim))
        grad = term if grad is None else grad.add_(term)
    if positive is not None:
        term = torch.exp(sim - _along(pos_lse, dim)).mul_(_along(pos_lse_coef, dim)).add_(_along(pos_sum_coef, dim))
        grad.add_(torch.where(positive, term, torch.zeros((), dtype=sim.dtype, device=sim.device)))
    return grad


def finite_or_zero(x: Tensor) -> Tensor:
    """Replace the -inf of empty log-sum-exps by 0 so that ``exp(x - lse)`` stays finite."""
    return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))
