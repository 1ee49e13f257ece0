"""The chunked engine: row statistics tile by tile, with an O(N) memory autograd.

Forward walks ``block x block`` tiles of ``s = z·cᵀ/τ`` and merges each tile's
log-sum-exp into running per-anchor statistics. Only the inputs and the O(M·E)
statistics are saved; backward recomputes every tile and applies

.. math::

    \\frac{\\partial L}{\\partial s_{ij}} =
    \\sum_e g_{ie}\\,\\gamma_e\\, e^{\\gamma_e s_{ij} - \\mathrm{lse}_{ie}}[j \\in N(i)]
    + \\big(h_i\\, e^{s_{ij} - \\mathrm{pos\\_lse}_i} + k_i\\big)[j \\in P(i)],

then ``dZ = dS·C/τ``, ``dC = dSᵀ·Z/τ`` and ``d(1/τ) = Σ_i <z_i, (dS·C)_i>``. When the
anchors are the candidates (NT-Xent, SupCon), only tiles on and above the
diagonal are computed and each serves both its rows and its columns.
Works on any torch device; fp16/bf16 are accumulated in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from contrastive.engine.reference import compute_dtype
from contrastive.engine.tiles import (
    NEG_INF,
    TileGradient,
    is_direct_safe,
    negative_terms,
    reduce_tile,
    tile_masks,
)

Tensor = torch.Tensor


def _merge(lse: Tensor, pos_lse: Tensor, pos_sum: Tensor, rows: slice, tile: tuple) -> None:
    """Fold one tile's statistics into the running statistics of ``rows`` (in place)."""
    t_neg, t_pos_lse, t_pos_sum = tile
    lse[rows] = torch.logaddexp(lse[rows], t_neg)
    if t_pos_lse is not None:
        pos_lse[rows] = torch.logaddexp(pos_lse[rows], t_pos_lse)
        pos_sum[rows] += t_pos_sum


def _empty_stats(m: int, e: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return running statistics for ``m`` anchors before any tile: (-inf, -inf, 0)."""
    lse = torch.full((m, e), NEG_INF, dtype=like.dtype, device=like.device)
    pos_lse = torch.full((m,), NEG_INF, dtype=like.dtype, device=like.device)
    return lse, pos_lse, torch.zeros(m, dtype=like.dtype, device=like.device)


def _gradient(
    grads: tuple[Tensor | None, ...], lse: Tensor, pos_lse: Tensor, exponents: Sequence[float], direct: bool
) -> TileGradient:
    """Build the tile gradient from autograd's incoming gradients (None means zeros)."""
    g_neg, g_pos_lse, g_pos_sum = (
        torch.zeros_like(ref) if g is None else g.to(ref.dtype)
        for g, ref in zip(grads, (lse, pos_lse, pos_lse), strict=True)
    )
    gammas = torch.tensor(exponents, dtype=lse.dtype, device=lse.device)
    return TileGradient(lse, pos_lse, g_neg * gammas, g_pos_lse, g_pos_sum, direct)


class ChunkedRowStats(torch.autograd.Function):
    """Row statistics of ``anchors`` against distinct ``candidates``, tile by tile."""

    @staticmethod
    def forward(
        ctx, anchors, candidates, anchor_labels, candidate_labels, anchor_index, inv_tau, exponents, block
    ):  # type: ignore[override]
        """Compute ``(neg_lse, pos_lse, pos_sum)`` keeping one tile alive at a time."""
        dtype = compute_dtype(anchors.dtype)
        a = anchors.to(dtype) * inv_tau
        c = candidates.to(dtype)
        direct = is_direct_safe(anchors.to(dtype), c, inv_tau, exponents)
        lse, pos_lse, pos_sum = _empty_stats(a.shape[0], len(exponents), a)
        for i0 in range(0, a.shape[0], block):
            rows = slice(i0, i0 + block)
            for j0 in range(0, c.shape[0], block):
                cols = slice(j0, j0 + block)
                sim = a[rows] @ c[cols].T
                same, positive = tile_masks(
                    anchor_labels[rows], candidate_labels[cols], anchor_index[rows], j0
                )
                negatives = negative_terms(sim, same, exponents, direct)
                _merge(lse, pos_lse, pos_sum, rows, reduce_tile(sim, negatives, positive, 1, direct))
        ctx.save_for_backward(
            anchors, candidates, anchor_labels, candidate_labels, anchor_index, inv_tau, lse, pos_lse
        )
        ctx.exponents, ctx.block, ctx.direct = tuple(exponents), block, direct
        return lse, pos_lse, pos_sum

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        """Recompute each tile and accumulate the gradients of anchors, candidates and 1/τ."""
        anchors, candidates, anchor_labels, candidate_labels, anchor_index, inv_tau, lse, pos_lse = (
            ctx.saved_tensors
        )
        exponents, block, direct = ctx.exponents, ctx.block, ctx.direct
        dtype = compute_dtype(anchors.dtype)
        a = anchors.to(dtype) * inv_tau
        c = candidates.to(dtype)
        gradient = _gradient(grads, lse, pos_lse, exponents, direct)
        da, dc = torch.zeros_like(a), torch.zeros_like(c)
        for i0 in range(0, a.shape[0], block):
            rows = slice(i0, i0 + block)
            for j0 in range(0, c.shape[0], block):
                cols = slice(j0, j0 + block)
                sim = a[rows] @ c[cols].T
                same, positive = tile_masks(
                    anchor_labels[rows], candidate_labels[cols], anchor_index[rows], j0
                )
                dsim = gradient.tile(sim, negative_terms(sim, same, exponents, direct), positive, rows, dim=1)
                da[rows].addmm_(dsim, c[cols])
                dc[cols].addmm_(dsim.T, a[rows])
        # d(1/τ) = Σ dS_ij <anchors_i, c_j> = Σ_i <a_i, (dS·C)_i> / (1/τ)
        grad_t = (
            (torch.vdot(a.reshape(-1), da.reshape(-1)) / inv_tau).to(inv_tau.dtype)
            if ctx.needs_input_grad[5]
            else None
        )
        grad_a = (da * inv_tau).to(anchors.dtype) if ctx.needs_input_grad[0] else None
        grad_c = dc.to(candidates.dtype) if ctx.needs_input_grad[1] else None
        return grad_a, grad_c, None, None, None, grad_t, None, None


class SymmetricChunkedRowStats(torch.autograd.Function):
    """Row statistics of ``z`` against itself (each anchor excluded from its own row), upper tiles only."""

    @staticmethod
    def forward(ctx, z, labels, inv_tau, exponents, block):  # type: ignore[override]
        """Compute ``(neg_lse, pos_lse, pos_sum)`` from the tiles on and above the diagonal."""
        dtype = compute_dtype(z.dtype)
        zc = z.to(dtype)  # no copy when z is already in the compute dtype
        n = zc.shape[0]
        direct = is_direct_safe(zc, zc, inv_tau, exponents)
        lse, pos_lse, pos_sum = _empty_stats(n, len(exponents), zc)
        index = torch.arange(n, device=z.device)
        for i0 in range(0, n, block):
            rows = slice(i0, i0 + block)
            for j0 in range(i0, n, block):
                cols = slice(j0, j0 + block)
                sim = (zc[rows] @ zc[cols].T).mul_(inv_tau)  # scale the tile, not a copy of z
                diagonal = i0 == j0
                same, positive = tile_masks(labels[rows], labels[cols], index[rows] if diagonal else None, j0)
                negatives = negative_terms(sim, same, exponents, direct)
                _merge(lse, pos_lse, pos_sum, rows, reduce_tile(sim, negatives, positive, 1, direct))
                if not diagonal:
                    _merge(lse, pos_lse, pos_sum, cols, reduce_tile(sim, negatives, positive, 0, direct))
        ctx.save_for_backward(z, labels, inv_tau, lse, pos_lse)
        ctx.exponents, ctx.block, ctx.direct = tuple(exponents), block, direct
        return lse, pos_lse, pos_sum

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        """Recompute the upper tiles; each adds its row and column contributions to dZ."""
        z, labels, inv_tau, lse, pos_lse = ctx.saved_tensors
        exponents, block, direct = ctx.exponents, ctx.block, ctx.direct
        dtype = compute_dtype(z.dtype)
        zc = z.to(dtype)
        n = zc.shape[0]
        gradient = _gradient(grads, lse, pos_lse, exponents, direct)
        dz = torch.zeros_like(zc)
        index = torch.arange(n, device=z.device)
        for i0 in range(0, n, block):
            rows = slice(i0, i0 + block)
            for j0 in range(i0, n, block):
                cols = slice(j0, j0 + block)
                sim = (zc[rows] @ zc[cols].T).mul_(inv_tau)  # scale the tile, not a copy of z
                diagonal = i0 == j0
                same, positive = tile_masks(labels[rows], labels[cols], index[rows] if diagonal else None, j0)
                negatives = negative_terms(sim, same, exponents, direct)
                dsim = gradient.tile(sim, negatives, positive, rows, dim=1)
                if not diagonal:
                    dsim.add_(gradient.tile(sim, negatives, positive, cols, dim=0))
                dz[rows].addmm_(dsim, zc[cols])
                dz[cols].addmm_(dsim.T, zc[rows])
        # Σ dS∘S = (1/τ)·½·Σ_i <z_i, dz_i>, so d(1/τ) = Σ dS∘S / (1/τ) = ½ Σ_i <z_i, dz_i>
        grad_t = (
            (0.5 * torch.vdot(zc.reshape(-1), dz.reshape(-1))).to(inv_tau.dtype)
            if ctx.needs_input_grad[2]
            else None
        )
        grad_z = dz.mul_(inv_tau).to(z.dtype) if ctx.needs_input_grad[0] else None
        return grad_z, None, grad_t, None, None
