r"""The chunked engine: row statistics tile by tile, with an O(N) memory autograd.

Forward walks ``block x block`` tiles of ``s = a·cᵀ/τ`` (:func:`~contrastive.engine.tiles.walk`)
and folds each tile's terms into running per-line statistics. Unless the problem is small
enough to keep its tiles (``keep``), only the inputs and the O(M·K) statistics are saved and
backward recomputes every tile, forms

.. math::

    \frac{\partial L}{\partial s_{ij}} = \sum_k g_{ik}\,\gamma_k\, e^{\gamma_k s_{ij} - \mathrm{lse}_{ik}}
        [j \in \text{set}_k(i)]

and accumulates ``dA = dS·C/τ``, ``dC = dSᵀ·A/τ`` and ``d(1/τ) = Σ_i <a_i, (dS·C)_i>``.

Three problems share the one tile walker:

* ``rows``: anchors against distinct candidates (statistics of the anchors);
* ``symmetric``: the anchors against themselves, own column excluded; only tiles on and
  above the diagonal are formed, each serving its rows and its columns;
* ``dual``: both directions of one matrix (CLIP), statistics of the rows and of the columns
  from each tile, and one backward for both.

Works on any torch device; fp16/bf16 are accumulated in fp32. Nothing reads a value back
from the device, so the passes run without host synchronisation and trace under
``torch.compile``.
"""

from __future__ import annotations

import torch

from contrastive.engine.explog import LN2, LOG2E
from contrastive.engine.reference import compute_dtype
from contrastive.engine.tiles import Accumulator, TermSpec, TileGradient, TileMasks, tile_gradient, tile_terms, walk

Tensor = torch.Tensor


class ChunkedStats(torch.autograd.Function):
    """Log-sum-exp statistics of ``s = anchors · candidatesᵀ · inv_tau``, tile by tile.

    ``forward(anchors, candidates, inv_tau, row_labels, col_labels, self_col, spec, mode, block, keep)``
    returns ``lse (M, K)``, and for ``mode="dual"`` also the columns' ``(N, K)``.
    ``candidates`` is None for ``mode="symmetric"``.
    """

    @staticmethod
    def forward(ctx, anchors, candidates, inv_tau, row_labels, col_labels, self_col,  # type: ignore[override]
                spec, mode, block, keep):
        """Walk the tiles once; keep them for backward when ``keep``."""
        symmetric, dual = mode == "symmetric", mode == "dual"
        dtype = compute_dtype(anchors.dtype)
        a = anchors.to(dtype)
        c = a if symmetric else candidates.to(dtype)
        scaled = a * (inv_tau * LOG2E)  # base-2 tiles (contrastive.engine.tiles)
        masks = TileMasks(row_labels, col_labels, self_col, symmetric)
        rows_acc = Accumulator(a.shape[0], spec, a)
        cols_acc = Accumulator(c.shape[0], spec, a) if dual else rows_acc
        kept: list[Tensor] = []
        for rows, cols, diagonal in walk(a.shape[0], c.shape[0], block, upper=symmetric):
            terms = tile_terms(scaled[rows] @ c[cols].T, spec, masks, rows, cols, diagonal)
            rows_acc.add(terms, rows, dim=1)
            if dual or (symmetric and not diagonal):
                cols_acc.add(terms, cols, dim=0)
            if keep:
                kept.extend(terms)
        lse2 = (rows_acc.lse(), cols_acc.lse()) if dual else (rows_acc.lse(),)  # base 2
        ctx.save_for_backward(anchors, candidates, inv_tau, row_labels, col_labels, self_col, *lse2, *kept)
        outputs = tuple(x * LN2 for x in lse2)
        ctx.spec, ctx.mode, ctx.block, ctx.keep, ctx.outputs = spec, mode, block, keep, len(outputs)
        return outputs if dual else outputs[0]

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        """Recompute (or reuse) each tile and accumulate the gradients of anchors, candidates and 1/τ."""
        anchors, candidates, inv_tau, row_labels, col_labels, self_col, *rest = ctx.saved_tensors
        spec, mode, block, keep = ctx.spec, ctx.mode, ctx.block, ctx.keep
        symmetric, dual = mode == "symmetric", mode == "dual"
        outputs, kept = rest[: ctx.outputs], rest[ctx.outputs :]
        dtype = compute_dtype(anchors.dtype)
        a = anchors.to(dtype)
        c = a if symmetric else candidates.to(dtype)
        scaled = a * (inv_tau * LOG2E)  # base-2 tiles (contrastive.engine.tiles)
        masks = TileMasks(row_labels, col_labels, self_col, symmetric)
        rows_grad = TileGradient(outputs[0], grads[0], spec)
        cols_grad = TileGradient(outputs[1], grads[1], spec) if dual else rows_grad
        need_a, need_c, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        ga = torch.zeros_like(a)
        gc = None if symmetric or not need_c else torch.zeros_like(c)
        k = len(spec.gammas)
        for t, (rows, cols, diagonal) in enumerate(walk(a.shape[0], c.shape[0], block, upper=symmetric)):
            if keep:
                terms = list(kept[t * k : (t + 1) * k])
            else:
                terms = tile_terms(scaled[rows] @ c[cols].T, spec, masks, rows, cols, diagonal)
            both = dual or (symmetric and not diagonal)
            dsim = tile_gradient(terms, rows_grad, rows, cols_grad if both else None, cols, inplace=not keep)
            if symmetric:
                if diagonal:
                    ga[rows].addmm_(dsim, a[rows]).addmm_(dsim.T, a[rows])
                else:
                    ga[rows].addmm_(dsim, a[cols])
                    ga[cols].addmm_(dsim.T, a[rows])
                continue
            if need_a or need_t:
                ga[rows].addmm_(dsim, c[cols])
            if gc is not None:
                gc[cols].addmm_(dsim.T, a[rows])
        # d(1/τ) = Σ dS_ij <a_i, c_j> = Σ_i <a_i, (dS·C)_i>; symmetric tiles count each pair twice
        grad_t = None
        if need_t:
            grad_t = torch.vdot(a.reshape(-1), ga.reshape(-1)) * (0.5 if symmetric else 1.0)
            grad_t = grad_t.to(inv_tau.dtype)
        grad_a = (ga * inv_tau).to(anchors.dtype) if need_a else None
        grad_c = (gc * inv_tau).to(candidates.dtype) if gc is not None else None
        return grad_a, grad_c, grad_t, None, None, None, None, None, None, None
