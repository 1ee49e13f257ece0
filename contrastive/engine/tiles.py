r"""Arithmetic on one tile of the similarity matrix, shared by every chunked pass.

A tile is ``sim[I, J]`` for a block of anchors ``I`` and a block of candidates ``J``, in base 2:
``sim = s·log2(e)`` (the factor is in the rows' scale), so :math:`e^{\gamma s} = 2^{\gamma\,\mathrm{sim}}`
is one ``exp2`` (see :mod:`contrastive.engine.explog`); the statistics and gradients that
leave this module are natural (:math:`\partial L/\partial s`) but for the log-sum-exps, which
stay in base 2 until the engine hands them out.
It serves the anchors of ``I`` (reductions along ``dim=1``) and, when a second set of
statistics is kept for the candidates (the symmetric and the dual problems), the
anchors of ``J`` (reductions along ``dim=0``).

Each tile yields *terms*, one ``b x b`` tensor per statistic :math:`k`: for the joint
statistic (the uniform denominator) every candidate but the anchor itself; otherwise one
term per exponent :math:`\gamma_e` over the negatives and one over the positives.

Two numerically equivalent modes, chosen from Python-known values before any tile is
formed (:func:`direct_is_safe`): *direct*, when every :math:`|\gamma s|` is bounded by
:data:`DIRECT_LIMIT`, forms :math:`e^{\gamma s}` once and accumulates plain sums;
*shifted* keeps an online maximum per line (as flash attention does) and never overflows.
Nothing here reads a value back from the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from contrastive.engine.explog import LOG2E, log

Tensor = torch.Tensor
NEG_INF = float("-inf")
#: Largest |γ·s| for which e^{±γs} and the products with e^{-lse} stay well inside the normal range.
DIRECT_LIMIT = {torch.float32: 40.0, torch.float64: 300.0}


@dataclass(frozen=True)
class TermSpec:
    """What the tiles compute: the exponents, joint or split statistics, direct or shifted exponentials."""

    exponents: tuple[float, ...]
    joint: bool
    direct: bool

    @property
    def gammas(self) -> tuple[float, ...]:
        """The exponent of every statistic: (1,) joint; the exponents then 1 (the positives) split."""
        return (1.0,) if self.joint else (*self.exponents, 1.0)


def direct_is_safe(bound: float | None, exponents: Sequence[float], dtype: torch.dtype) -> bool:
    """Whether ``bound`` (a Python-known bound of ``|s|``, None: unknown) allows direct exponentials."""
    if bound is None:
        return False
    return bound * max(1.0, max(abs(g) for g in exponents)) <= DIRECT_LIMIT.get(dtype, 0.0)


def walk(m: int, n: int, block: int, upper: bool) -> Iterator[tuple[slice, slice, bool]]:
    """Yield ``(rows, cols, diagonal)`` over the tiles of an ``m x n`` matrix (``upper``: j0 >= i0 only)."""
    for i0 in range(0, m, block):
        for j0 in range(i0 if upper else 0, n, block):
            yield slice(i0, i0 + block), slice(j0, j0 + block), upper and i0 == j0


def _fill(x: Tensor, value: float) -> Tensor:
    """A 0-dim tensor holding ``value`` with ``x``'s dtype and device."""
    return torch.full((), value, dtype=x.dtype, device=x.device)


@dataclass
class TileMasks:
    """The label and self information of one problem, sliced per tile (labels only for split terms)."""

    row_labels: Tensor | None
    col_labels: Tensor | None
    #: each row's own column to leave out (-1: none), or None for "the diagonal" (symmetric problems)
    self_col: Tensor | None
    symmetric: bool

    def same(self, rows: slice, cols: slice, diagonal: bool) -> Tensor:
        """Return the ``(b_r, b_c)`` mask of equal labels (symmetric problems: the rows' labels on both sides).

        Multi-hot labels (0/1 rows in the tile's dtype): whether a pair shares a label, and
        True at each row's own column, which is then in neither set.
        """
        col_labels = self.row_labels if self.col_labels is None else self.col_labels
        if self.row_labels.dim() == 1:
            return self.row_labels[rows, None] == col_labels[None, cols]
        same = (self.row_labels[rows] @ col_labels[cols].T) > 0
        self.drop_self(same, rows, cols, diagonal, True)
        return same

    def drop_self(self, term: Tensor, rows: slice, cols: slice, diagonal: bool, value: float) -> None:
        """Set each row's own column of ``term`` (rows ``rows``, columns ``cols``) to ``value``, in place."""
        if self.symmetric:
            if diagonal:
                term.diagonal().fill_(value)
            return
        if self.self_col is None:
            return
        width = term.shape[1]
        local = self.self_col[rows] - cols.start
        inside = (local >= 0) & (local < width)
        index = local.clamp(0, max(width - 1, 0))[:, None]
        kept = term.gather(1, index)
        term.scatter_(1, index, torch.where(inside[:, None], _fill(term, value), kept))


def tile_terms(sim: Tensor, spec: TermSpec, masks: TileMasks, rows: slice, cols: slice, diagonal: bool
               ) -> list[Tensor]:
    """Return the terms of the base-2 tile ``sim``: ``e^{γs}`` (direct; 0 outside the set) or ``γ·sim`` (shifted; -inf)."""
    empty = 0.0 if spec.direct else NEG_INF
    if spec.joint:
        term = sim.exp2_() if spec.direct else sim
        masks.drop_self(term, rows, cols, diagonal, empty)
        return [term]
    same = masks.same(rows, cols, diagonal)
    base = torch.exp2(sim) if spec.direct else sim
    out = []
    for gamma in spec.exponents:
        if gamma == 1.0:
            scaled = base
        elif spec.direct:
            scaled = base * base if gamma == 2.0 else torch.mul(sim, gamma).exp2_()
        else:
            scaled = sim * gamma
        out.append(torch.where(same, _fill(sim, empty), scaled))
    positive = torch.where(same, base, _fill(sim, empty))
    masks.drop_self(positive, rows, cols, diagonal, empty)
    out.append(positive)
    return out


class Accumulator:
    """Running per-line statistics of ``K`` terms: plain sums (direct) or online max and sum (shifted)."""

    def __init__(self, lines: int, spec: TermSpec, like: Tensor) -> None:
        """Start ``lines`` lines of ``len(spec.gammas)`` statistics over empty sets."""
        k = len(spec.gammas)
        self.direct = spec.direct
        self.total = torch.zeros(lines, k, dtype=like.dtype, device=like.device)
        self.peak = None if spec.direct else torch.full((lines, k), NEG_INF, dtype=like.dtype, device=like.device)

    def add(self, terms: list[Tensor], lines: slice, dim: int) -> None:
        """Fold the terms of one tile, reduced along ``dim``, into the statistics of ``lines``."""
        if self.direct:
            self.total[lines] += torch.stack([t.sum(dim=dim) for t in terms], dim=1)
            return
        tile_peak = torch.stack([t.amax(dim=dim) for t in terms], dim=1)
        peak = torch.maximum(self.peak[lines], tile_peak)
        shift = torch.where(torch.isfinite(peak), peak, _fill(peak, 0.0))
        sums = torch.stack(
            [torch.sub(t, shift[:, k, None] if dim == 1 else shift[None, :, k]).exp2_().sum(dim=dim)
             for k, t in enumerate(terms)],
            dim=1,
        )
        self.total[lines] = self.total[lines] * torch.exp2(self.peak[lines] - shift) + sums
        self.peak[lines] = peak

    def lse(self) -> Tensor:
        """Return the ``(lines, K)`` log-sum-exps in base 2, ``log2 Σ 2^term`` (-inf for empty sets).

        Base 2 like the terms, so that the shifted backward's ``term - lse`` is at most 0 to
        rounding at any magnitude (a round trip through natural units drifts by ulps of ``|s|``).
        """
        if self.direct:
            return log(self.total).mul_(LOG2E)
        return log(self.total).mul_(LOG2E) + torch.where(
            torch.isfinite(self.peak), self.peak, _fill(self.peak, 0.0)
        )


class TileGradient:
    """Per-line coefficients that turn the terms of a tile into ∂loss/∂sim.

    ``∂L/∂s_ij = Σ_k g_ik γ_k e^{γ_k s_ij - lse_ik}`` over the sets that hold j; the
    coefficients come from autograd's incoming gradients ``g`` and the saved ``lse``.
    Empty sets (lse = -inf) get harmless zeros. No value is read back from the device.
    """

    def __init__(self, lse: Tensor, grad: Tensor | None, spec: TermSpec) -> None:
        """Precompute scales ``γ g 2^{-lse}`` (direct) or keep ``lse`` and ``γ g`` (shifted); ``lse`` in base 2."""
        gammas = torch.tensor(spec.gammas, dtype=lse.dtype, device=lse.device)
        coef = torch.zeros_like(lse) if grad is None else grad.to(lse.dtype) * gammas
        finite = torch.where(torch.isfinite(lse), lse, _fill(lse, 0.0))
        self.direct = spec.direct
        self.scale = coef * torch.exp2(-finite) if spec.direct else coef
        self.lse = finite

    def term(self, term: Tensor, k: int, lines: slice, dim: int, inplace: bool = False) -> Tensor:
        """Return the contribution of statistic ``k`` of ``lines`` (along ``1 - dim``) to ∂L/∂sim.

        ``inplace`` lets the direct mode overwrite ``term`` (a tile that is not kept).
        """
        scale = self.scale[lines, k]
        scale = scale[:, None] if dim == 1 else scale[None, :]
        if self.direct:
            return term.mul_(scale) if inplace else term * scale
        lse = self.lse[lines, k]
        return torch.sub(term, lse[:, None] if dim == 1 else lse[None, :]).exp2_().mul_(scale)


def tile_gradient(terms: list[Tensor], rows_grad: TileGradient, rows: slice,
                  cols_grad: TileGradient | None, cols: slice, inplace: bool) -> Tensor:
    """Return ∂L/∂sim on one tile from the row statistics' and (if kept) the column statistics' coefficients.

    ``inplace``: the terms are not needed afterwards and may be overwritten. Direct terms
    seen from both sides take one product, ``e_ij (r_i + c_j)`` (the coefficients' sum is
    formed from two vectors, so the tile is read once instead of three times).
    """
    grad = None
    for k, term in enumerate(terms):
        if cols_grad is not None and rows_grad.direct:
            part = torch.add(rows_grad.scale[rows, k, None], cols_grad.scale[None, cols, k]).mul_(term)
        else:
            extra = None if cols_grad is None else cols_grad.term(term, k, cols, dim=0)
            part = rows_grad.term(term, k, rows, dim=1, inplace=inplace)
            if extra is not None:
                part = part.add_(extra)
        grad = part if grad is None else grad.add_(part)
    return grad
