r"""The fused small-problem path: a whole SupCon / NT-Xent / CLIP loss as one autograd Function.

Below :data:`FUSED_ELEMENTS` entries (per Function) the similarity matrix is cheap to hold, and
on a CPU the time of a loss is the number of operations dispatched, not their FLOPs (each
wakes the thread pool). These Functions form ``s = z·zᵀ/τ`` once and return the loss itself,

.. math::

    \mathcal{L} = \sum_i a_i\,\mathrm{lse}_i - \sum_{ij} C_{ij}\, s_{ij},\qquad
    C_{ij} = \frac{a_i\,[j\in P(i)]}{|P(i)|},

with :math:`a_i` the weight of anchor i in the mean (0 for an anchor without a positive),
and differentiate it by hand: :math:`\partial\mathcal{L}/\partial s = a\,\mathrm{softmax}(s) - C`,
then ``dz = (G + Gᵀ) z / τ`` (the symmetric problem) or ``dx = G y / τ``, ``dy = Gᵀ x / τ``
(CLIP). The L2 normalisation is inside too, scale-safe as :func:`~contrastive.losses.base.unit_rows`
(rows divided by their largest magnitude first; a zero row stays zero with a zero gradient).

Exact where it is used (:func:`fused_applies`): one process, the uniform sampler, no extra
negatives, not decoupled, integer (or no) labels, weights without gradient. Nothing reads
a value back from the device; fp16/bf16 inputs are computed in float32.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from contrastive.engine import resolve_backend
from contrastive.engine.dispatch import check_inverse_temperature
from contrastive.engine.reference import compute_dtype
from contrastive.losses.base import EngineOptions, check_some_valid, is_uniform

Tensor = torch.Tensor
#: Problems whose similarity matrix has at most this many entries take a fused Function (on the
#: chunked backend with automatic tiles), per Function: the largest size at which it beat the
#: chunked engine on the 2-core benchmark CPU (D = 128, fp32, alternating rounds), within a
#: budget of 2^22 entries (16 MiB per float32 matrix). ``multiview`` (NT-Xent, SupCon): 2N = 1,448
#: fused 24.4 / 24.5 ms against tiles 27.1 / 26.5; at 2,048 the tiles win (41 against 50 ms:
#: they form only the upper triangle). ``dual`` (CLIP): 2N = 4,096 (B = 2,048) 46 against 56 ms.
#: ``stats`` (:mod:`contrastive.losses.fused_stats`, the hard sampler): 2N = 2,048 63 against 83 ms.
FUSED_ELEMENTS = {"multiview": 2**21, "dual": 2**22, "stats": 2**22}


def fused_size_fits(options: EngineOptions, rows: int, cols: int, like: Tensor, kind: str) -> bool:
    """Whether ``rows x cols`` similarities may take the fused Function ``kind`` (Python-known).

    The chunked backend (``auto`` off Triton) with automatic tiles, at least two columns and
    at most ``FUSED_ELEMENTS[kind]`` entries.
    """
    return (options.block_size is None and options.backend in ("auto", "chunked") and cols >= 2
            and rows * cols <= FUSED_ELEMENTS[kind]
            and resolve_backend(options.backend, like.device, like.dtype) == "chunked")


def fused_applies(options: EngineOptions, rows: int, cols: int, weights: Tensor | None, like: Tensor,
                  kind: str = "multiview") -> bool:
    """Whether a single-process problem of ``rows x cols`` similarities takes the fused path (Python-known).

    :func:`fused_size_fits`, the uniform sampler, not decoupled, weights without gradient.
    """
    return (not options.decoupled and is_uniform(options.resolved_sampler)
            and (weights is None or not weights.requires_grad) and fused_size_fits(options, rows, cols, like, kind))


def _inverse_temperature(temperature: float | Tensor, like: Tensor, validate_args: bool) -> float | Tensor:
    """Return 1/τ (a float, or a 0-d tensor in the accumulation dtype), checked as the engine checks it."""
    if isinstance(temperature, Tensor):
        if validate_args:
            check_inverse_temperature(float(temperature.detach()), like.dtype)
        return 1.0 / temperature.reshape(()).to(device=like.device, dtype=compute_dtype(like.dtype))
    check_inverse_temperature(temperature, like.dtype)
    return 1.0 / temperature


def fused_multiview_loss(z: Tensor, labels: Tensor | None, temperature: float | Tensor, n_views: int,
                         weights: Tensor | None, options: EngineOptions) -> Tensor:
    """SupCon of the stacked views ``z`` (``labels`` ``(B,)`` int64 or None: pair ids) by :class:`FusedMultiview`."""
    inv_tau = _inverse_temperature(temperature, z, options.validate_args)
    if labels is None:
        return FusedMultiview.apply(z, None, inv_tau, weights, n_views, options.normalize)
    loss, n_valid = FusedMultiview.apply(z, labels, inv_tau, weights, n_views, options.normalize)
    if options.validate_args:
        check_some_valid(n_valid, options, stacklevel=5)
    return loss


def fused_clip_loss(image: Tensor, text: Tensor, labels: Tensor | None, logit_scale: float | Tensor,
                    weights: Tensor | None, options: EngineOptions) -> Tensor:
    """CLIP's loss at multiplier ``e^logit_scale`` by :class:`FusedDual` (``labels`` int64 or None)."""
    if isinstance(logit_scale, Tensor):
        inv_tau = logit_scale.reshape(()).to(device=image.device, dtype=compute_dtype(image.dtype)).exp()
    else:
        inv_tau = math.exp(logit_scale)
    return FusedDual.apply(image, text, labels, inv_tau, weights, options.normalize)


def _unit(x: Tensor) -> tuple[Tensor, Tensor]:
    """Return the unit rows of ``x`` and each row's ``1/‖x_i‖`` (0 for a zero row), without overflow."""
    peak = x.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(x.dtype).tiny)  # faster than the inf-norm
    u = x / peak
    norm = torch.linalg.vector_norm(u, dim=1, keepdim=True).clamp_min_(1e-12)
    inverse = (peak * norm).reciprocal_().nan_to_num_(posinf=0.0)  # zero rows: 1/(tiny·eps) = inf -> 0
    return u.div_(norm), inverse


def _unit_backward(grad: Tensor, z: Tensor, inverse: Tensor) -> Tensor:
    """The gradient with respect to the rows before :func:`_unit`: ``(g - z<z, g>) / ‖x‖`` (in place)."""
    return grad.addcmul_(z, (z * grad).sum(dim=1, keepdim=True), value=-1.0).mul_(inverse)


def _symmetrised(g: Tensor) -> Tensor:
    """Return ``g + gᵀ`` (a new tensor): the transpose copied first, which torch blocks (2-3x faster than ``g + g.T``)."""
    return g.T.contiguous().add_(g)


def _prepare(x: Tensor, normalize: bool) -> tuple[Tensor, Tensor | None]:
    """The rows in the accumulation dtype, unit-norm when ``normalize`` (with their inverse norms)."""
    xc = x.to(compute_dtype(x.dtype))
    return _unit(xc) if normalize else (xc, None)


def _anchor_weights(weights: Tensor | None, valid: Tensor | None, repeats: int, n: int, dtype: torch.dtype
                    ) -> Tensor | float:
    """Return ``a``: each anchor's weight in the mean (a float when every anchor weighs ``1/n``)."""
    if weights is None and valid is None:
        return 1.0 / n
    if weights is None:
        return valid.to(dtype) / valid.sum().clamp_(min=1)
    w = weights.to(dtype).repeat(repeats)
    if valid is not None:
        w = w * valid
    total = w.sum()
    return w / torch.where(total > 0, total, torch.ones_like(total))


def same_labels(labels: Tensor, dtype: torch.dtype) -> Tensor:
    """The float mask ``[y_i = y_j]`` of ``labels`` (a float mask: products with it beat ``where``)."""
    return (labels[:, None] == labels[None, :]).to(dtype)


def _pair_coefficients(labels: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """CLIP's positives: the float mask of equal labels (the pair itself included) and ``1 / |P(i)|``."""
    mask = same_labels(labels, dtype)
    return mask, mask.sum(dim=1).reciprocal_()


def _label_blocks(labels: Tensor, n_views: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Return the ``(B, B)`` float mask of equal labels and each stacked row's number of positives ``(V·B,)``.

    Row ``(v, b)`` has ``V · |{c : y_c = y_b}| - 1`` positives: every view of its label but itself.
    """
    same = same_labels(labels, dtype)
    count = same.sum(dim=1).mul_(n_views).sub_(1.0)
    return same, count.repeat(n_views)


def _block_sum(m: Tensor, same: Tensor, c: Tensor, n_views: int) -> Tensor:
    """Return ``Σ_ij c_i [y_i = y_j] m_ij`` for the ``(V·B) x (V·B)`` matrix ``m`` (its diagonal included)."""
    batch = same.shape[0]
    per_label = m.view(n_views * batch, n_views, batch).sum(dim=1)  # Σ over the views of column c
    return torch.vdot((per_label.view(n_views, batch, batch) * same).sum(dim=2).view(-1), c)


class FusedMultiview(torch.autograd.Function):
    """SupCon over ``V`` stacked views against themselves (own column excluded): the loss and its backward.

    ``forward(x, labels, inv_tau, weights, n_views, normalize)``: ``x`` ``(V·B, D)``, ``labels``
    ``(B,)`` int64 or None (pair ids), ``inv_tau`` a float or 0-d tensor, ``weights`` ``(B,)`` or
    None. Returns the loss, and with labels also the number of anchors with a positive.
    """

    @staticmethod
    def forward(ctx, x, labels, inv_tau, weights, n_views, normalize):  # type: ignore[override]  # noqa: ANN001, ANN205
        """Form ``s`` once; the loss is ``Σ a·lse - Σ C∘s``."""
        z, inverse = _prepare(x, normalize)
        n, dtype = z.shape[0], z.dtype
        batch = n // n_views
        s = torch.mm(z, z.T).mul_(inv_tau).fill_diagonal_(float("-inf"))  # the own column is out
        ctx.scalars = (inv_tau if not isinstance(inv_tau, Tensor) else None, n_views, x.dtype)
        inv_tau_t = inv_tau if isinstance(inv_tau, Tensor) else None
        if labels is None:  # the positives of row (v, b) are (w, b), w != v: V-1 each, same weight a_(v, b)
            log_p = torch.log_softmax(s, dim=1).fill_diagonal_(0.0)  # 0: sums over the positives skip it
            a = _anchor_weights(weights, None, n_views, n, dtype)
            blocks = log_p.view(n_views, batch, n_views, batch).diagonal(dim1=1, dim2=3)
            if isinstance(a, float):
                loss = blocks.sum() * (-a / (n_views - 1))
            else:
                loss = torch.dot(blocks.sum(dim=(0, 1)), a[:batch]) * (-1.0 / (n_views - 1))
            ctx.save_for_backward(z, inverse, log_p, a if isinstance(a, Tensor) else None, inv_tau_t)
            ctx.labelled, ctx.a_float = False, (a if isinstance(a, float) else None)
            return loss
        # a B x B mask of the labels, applied to the V x V blocks (no N x N mask is formed)
        same, count = _label_blocks(labels, n_views, dtype)
        valid = count > 0
        a = _anchor_weights(weights, valid, n_views, n, dtype)
        c = a / count.clamp(min=1)  # C_ij = c_i [y_i = y_j] off the diagonal
        log_p = torch.log_softmax(s, dim=1).fill_diagonal_(0.0)
        loss = torch.rsub(_block_sum(log_p, same, c, n_views), 0.0)  # +0.0 without positives
        ctx.save_for_backward(z, inverse, log_p, same, a, c, inv_tau_t)
        ctx.labelled = True
        n_valid = valid.sum()
        ctx.mark_non_differentiable(n_valid)
        return loss, n_valid

    @staticmethod
    def backward(ctx, grad, *_):  # type: ignore[override]  # noqa: ANN001, ANN205
        """``G = a·softmax(s) - C``; ``dz = (G + Gᵀ) z / τ``; ``dτ⁻¹ = ½ <z, (G + Gᵀ) z>``."""
        inv_tau_f, n_views, x_dtype = ctx.scalars
        if not ctx.labelled:
            z, inverse, log_p, a, inv_tau_t = ctx.saved_tensors
            a_float = ctx.a_float
            g = torch.exp(log_p)
            g = g.mul_(a_float) if a is None else g.mul_(a[:, None])
            # C is a/(V-1) on the block diagonals (the main one is reset below)
            batch = z.shape[0] // n_views
            c = a_float / (n_views - 1) if a is None else (a / (n_views - 1)).view(n_views, batch)[:, None, :]
            g.view(n_views, batch, n_views, batch).diagonal(dim1=1, dim2=3).sub_(c)
        else:
            z, inverse, log_p, same, a, c, inv_tau_t = ctx.saved_tensors
            g = torch.exp(log_p).mul_(a[:, None])  # a·softmax - C, C from the label blocks
            batch = same.shape[0]
            g.view(n_views, batch, n_views, batch).sub_(c.view(n_views, batch, 1, 1) * same.view(1, batch, 1, batch))
        gz = torch.mm(_symmetrised(g.fill_diagonal_(0.0)), z)  # the own column: softmax 0, no positive
        grad_tau = None
        if ctx.needs_input_grad[2]:
            grad_tau = (torch.vdot(z.view(-1), gz.view(-1)) * (0.5 * grad)).to(inv_tau_t.dtype)
        gz.mul_(grad * (inv_tau_f if inv_tau_t is None else inv_tau_t))
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (gz if inverse is None else _unit_backward(gz, z, inverse)).to(x_dtype)
        return grad_x, None, grad_tau, None, None, None


class FusedDual(torch.autograd.Function):
    """CLIP's two directions of ``s = x·yᵀ/τ`` (positives: the pair, or every pair with the same label).

    ``forward(x, y, labels, inv_tau, weights, normalize)``: ``x``, ``y`` ``(B, D)``; returns the
    mean of the two directions' losses.
    """

    @staticmethod
    def forward(ctx, x, y, labels, inv_tau, weights, normalize):  # type: ignore[override]  # noqa: ANN001, ANN205
        """Form ``s`` once; rows and columns each give a log-sum-exp."""
        batch = x.shape[0]
        z, inverse = _prepare(torch.cat([x, y]), normalize)
        zx, zy = z[:batch], z[batch:]
        s = torch.mm(zx, zy.T).mul_(inv_tau)
        rows, cols = torch.log_softmax(s, dim=1), torch.log_softmax(s, dim=0)
        a = _anchor_weights(weights, None, 1, batch, z.dtype)
        if labels is None:  # the positive of row i and of column i is the pair (i, i)
            both = rows.diagonal() + cols.diagonal()
            loss = both.sum() * (-0.5 * a) if isinstance(a, float) else torch.dot(both, a) * -0.5
            coef = None
        else:  # row i: a_i [l_i = l_j] / |P(i)|; column j: a_j [l_i = l_j] / |P(j)|
            mask, reciprocal = _pair_coefficients(labels, z.dtype)
            per_row = (a * reciprocal) * 0.5
            coef = mask * per_row[:, None], mask * per_row[None, :]
            loss = -(torch.vdot(coef[0].view(-1), rows.view(-1)) + torch.vdot(coef[1].view(-1), cols.view(-1)))
            coef = coef[0] + coef[1]
        ctx.save_for_backward(z, inverse, rows, cols, coef, a if isinstance(a, Tensor) else None,
                              inv_tau if isinstance(inv_tau, Tensor) else None)
        ctx.scalars = (a if isinstance(a, float) else None, inv_tau if not isinstance(inv_tau, Tensor) else None,
                       x.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001, ANN205
        """``G = ½ (a_i softmax_row + a_j softmax_col) - C``; ``dx = G y / τ``, ``dy = Gᵀ x / τ``."""
        z, inverse, rows, cols, coef, a, inv_tau_t = ctx.saved_tensors
        a_float, inv_tau_f, x_dtype = ctx.scalars
        batch = rows.shape[0]
        zx, zy = z[:batch], z[batch:]
        rows, cols = torch.exp(rows), torch.exp(cols)
        if a is None:
            g = rows.add_(cols).mul_(0.5 * a_float)
        else:
            half = a * 0.5
            g = rows.mul_(half[:, None]).add_(cols.mul_(half[None, :]))
        if coef is None:
            g.diagonal().sub_(a_float if a is None else a)
        else:
            g.sub_(coef)
        gz = torch.cat([torch.mm(g, zy), torch.mm(g.T, zx)])
        grad_tau = None
        if ctx.needs_input_grad[3]:
            grad_tau = (torch.vdot(zx.reshape(-1), gz[:batch].reshape(-1)) * grad).to(inv_tau_t.dtype)
        gz.mul_(grad * (inv_tau_f if inv_tau_t is None else inv_tau_t))
        grad_x = grad_y = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            gz = (gz if inverse is None else _unit_backward(gz, z, inverse)).to(x_dtype)
            grad_x, grad_y = gz[:batch], gz[batch:]
        return grad_x, grad_y, None, grad_tau, None, None
