"""The one-tile fast path: a small problem's joint statistics from one differentiable matrix.

For problems whose whole similarity matrix fits a small budget (see
:data:`~contrastive.engine.dispatch.KEEP_ELEMENTS`), tiling only adds work: the matrix is
formed once, each anchor's own column is set to -inf, and ``torch.logsumexp`` along rows
(and columns, for the dual problem) gives ``all_lse``; autograd differentiates it with
fused kernels and no recomputation. Used only where every line has a candidate, so no
log-sum-exp is over an empty set. Nothing reads a value back from the device.
"""

from __future__ import annotations

import torch

from contrastive.engine.reference import compute_dtype

Tensor = torch.Tensor


def dense_logits(anchors: Tensor, candidates: Tensor | None, inv_tau: Tensor, self_col: Tensor | None) -> Tensor:
    """Return ``s = a·cᵀ/τ`` in the accumulation dtype with each anchor's own column at -inf.

    ``candidates=None``: the anchors against themselves (the diagonal is the own column);
    otherwise ``self_col[i]`` is anchor i's own column or -1.
    """
    dtype = compute_dtype(anchors.dtype)
    a = anchors.to(dtype)
    logits = (a * inv_tau) @ (a if candidates is None else candidates.to(dtype)).T
    if candidates is None:
        return logits.fill_diagonal_(float("-inf"))
    if self_col is None:
        return logits
    columns = torch.arange(logits.shape[1], device=logits.device)
    return logits.masked_fill(columns[None, :] == self_col[:, None], float("-inf"))


def dense_all_lse(anchors: Tensor, candidates: Tensor | None, inv_tau: Tensor, self_col: Tensor | None,
                  columns_too: bool = False) -> tuple[Tensor, Tensor | None]:
    """Return ``all_lse`` of the rows and (``columns_too``, the dual problem) of the columns."""
    logits = dense_logits(anchors, candidates, inv_tau, self_col)
    return torch.logsumexp(logits, dim=1), torch.logsumexp(logits, dim=0) if columns_too else None
