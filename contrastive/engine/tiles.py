"""Arithmetic on one tile of the similarity matrix, shared by the chunked backends.

A tile is ``sim[I, J]`` for a block of anchors ``I`` and a block of candidates
``J``. The same tile serves the anchors of ``I`` (reductions along ``dim=1``) and,
when the matrix is symmetric, the anchors of ``J`` (reductions along ``dim=0``).

Two numerically equivalent modes. *Direct*: when every ``|γ·s|`` is provably below
:data:`DIRECT_LIMIT` (from the row norms), ``e^{γs}`` is formed once and summed as is,
which saves the max and shift passes. *Shifted*: otherwise, each line is shifted by
its maximum before exponentiation. Tiles without a shared label skip all masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor
NEG_INF = float("-inf")
#: Largest |γ·s| for which e^{±γs} and the products with e^{-lse} stay well inside the normal range.
DIRECT_LIMIT = {torch.float32: 40.0, torch.float64: 300.0}


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


def _along(vector: Tensor, dim: int) -> Tensor:
    """Shape a per-anchor vector to broadcast over a tile whose anchors run along ``1 - dim``."""
    return vector[:, None] if dim == 1 else vector[None, :]


def _fill(x: Tensor, value: float) -> Tensor:
    """A 0-dim tensor holding ``value`` with ``x``'s dtype and device."""
    return torch.full((), value, dtype=x.dtype, device=x.device)


def logsumexp(x: Tensor, dim: int) -> Tensor:
    """Return log Σ exp(x) along ``dim`` (-inf for all -inf lines), in fewer passes than torch's."""
    shift = x.amax(dim=dim, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, _fill(x, 0.0))
    return torch.exp(x - shift).sum(dim=dim).log_().add_(shift.squeeze(dim))


def negative_terms(
    sim: Tensor, same: Tensor | None, exponents: Sequence[float], direct: bool
) -> list[Tensor]:
    """Per exponent, the negatives' ``e^{γ s}`` (direct; 0 elsewhere) or ``γ s`` (shifted; -inf elsewhere)."""
    out = []
    for gamma in exponents:
        scaled = sim if gamma == 1.0 else sim * gamma
        if direct:
            scaled = torch.exp(scaled)
        if same is not None:
            scaled = torch.where(same, _fill(sim, 0.0 if direct else NEG_INF), scaled)
        out.append(scaled)
    return out


def reduce_tile(
    sim: Tensor, negatives: list[Tensor], positive: Tensor | None, dim: int, direct: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Return the tile's ``(neg_lse (b, E), pos_lse (b,), pos_sum (b,))`` along ``dim`` (None: none)."""
    if direct:
        neg_lse = torch.stack([x.sum(dim=dim).log_() for x in negatives], dim=1)
    else:
        neg_lse = torch.stack([logsumexp(x, dim=dim) for x in negatives], dim=1)
    if positive is None:
        return neg_lse, None, None
    if direct:
        pos_lse = torch.where(positive, torch.exp(sim), _fill(sim, 0.0)).sum(dim=dim).log_()
    else:
        pos_lse = logsumexp(torch.where(positive, sim, _fill(sim, NEG_INF)), dim=dim)
    pos_sum = torch.where(positive, sim, _fill(sim, 0.0)).sum(dim=dim)
    return neg_lse, pos_lse, pos_sum


class TileGradient:
    """Per-anchor coefficients that turn a recomputed tile into ∂loss/∂sim.

    Built once per backward from the saved statistics and the incoming gradients:
    ``neg_coef`` is γ·∂L/∂neg_lse ``(M, E)``, ``pos_lse_coef`` and ``pos_sum_coef`` are
    ∂L/∂pos_lse and ∂L/∂pos_sum ``(M,)``. Empty sets (lse = -inf) get harmless zeros.
    """

    def __init__(
        self,
        neg_lse: Tensor,
        pos_lse: Tensor,
        neg_coef: Tensor,
        pos_lse_coef: Tensor,
        pos_sum_coef: Tensor,
        direct: bool,
    ) -> None:
        """Precompute what each tile needs: scales (direct) or shifts (shifted)."""
        neg_lse, pos_lse = _finite_or_zero(neg_lse), _finite_or_zero(pos_lse)
        self.direct = direct
        self.pos_sum_coef = pos_sum_coef
        if direct:
            # coef · e^{s - lse} = e^{s} · (coef · e^{-lse})
            self.neg_scale = neg_coef * torch.exp(-neg_lse)
            self.pos_scale = pos_lse_coef * torch.exp(-pos_lse)
            return
        self.neg_lse, self.neg_coef, self.pos_lse, self.pos_lse_coef = (
            neg_lse,
            neg_coef,
            pos_lse,
            pos_lse_coef,
        )
        # With non-negative coefficients, coef · e^{x - lse} = e^{x - (lse - log coef)}: one pass fewer.
        self.neg_shift = None if bool((neg_coef < 0).any()) else neg_lse - torch.log(neg_coef)

    def tile(
        self, sim: Tensor, negatives: list[Tensor], positive: Tensor | None, rows: slice, dim: int
    ) -> Tensor:
        """Return ∂loss/∂sim on the tile for the anchors ``rows``, which run along ``1 - dim``."""
        grad = None
        for e, x in enumerate(negatives):
            if self.direct:
                term = x * _along(self.neg_scale[rows, e], dim)
            elif self.neg_shift is not None:
                term = torch.exp(x - _along(self.neg_shift[rows, e], dim))
            else:
                term = torch.exp(x - _along(self.neg_lse[rows, e], dim)).mul_(
                    _along(self.neg_coef[rows, e], dim)
                )
            grad = term if grad is None else grad.add_(term)
        if positive is not None:
            if self.direct:
                term = torch.exp(sim).mul_(_along(self.pos_scale[rows], dim))
            else:
                term = torch.exp(sim - _along(self.pos_lse[rows], dim)).mul_(
                    _along(self.pos_lse_coef[rows], dim)
                )
            term.add_(_along(self.pos_sum_coef[rows], dim))
            grad.add_(torch.where(positive, term, _fill(sim, 0.0)))
        return grad


def _finite_or_zero(x: Tensor) -> Tensor:
    """Replace the -inf of empty log-sum-exps by 0 so that ``exp(x - lse)`` stays finite."""
    return torch.where(torch.isfinite(x), x, _fill(x, 0.0))


def is_direct_safe(anchors: Tensor, candidates: Tensor, inv_tau: Tensor, exponents: Sequence[float]) -> bool:
    """Whether every ``|γ s_ij| <= max‖a‖·max‖c‖/τ·max γ`` lies within :data:`DIRECT_LIMIT`."""
    if anchors.numel() == 0 or candidates.numel() == 0:
        return False
    bound = (anchors.norm(dim=1).max() * candidates.norm(dim=1).max() * inv_tau).item()
    bound *= max(1.0, max(abs(g) for g in exponents))
    return bound <= DIRECT_LIMIT.get(anchors.dtype, 0.0)
