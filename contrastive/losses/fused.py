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

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from contrastive.engine import resolve_backend
from contrastive.engine.dispatch import check_inverse_temperature
from contrastive.engine.explog import LN2, LOG2E, log
from contrastive.engine.reference import compute_dtype
from contrastive.engine.stats import label_groups
from contrastive.engine.tiles import direct_is_safe
from contrastive.losses.base import (
    EngineOptions,
    check_some_valid,
    is_uniform,
    unit_rows_backward,
    unit_with_inverse_norms,
)

Tensor = torch.Tensor
T = TypeVar("T")
#: Problems whose similarity matrix has at most this many entries take a fused Function (on the
#: chunked backend with automatic tiles), per Function: the largest size at which it beat the
#: chunked engine on the 2-core benchmark CPU (D = 128, fp32, alternating rounds), within a
#: budget of 2^22 entries (16 MiB per float32 matrix). ``multiview`` (NT-Xent, SupCon): 2N = 1,448
#: fused 24.4 / 24.5 ms against tiles 27.1 / 26.5; at 2,048 the tiles win (41 against 50 ms:
#: they form only the upper triangle). ``dual`` (CLIP): 2N = 4,096 (B = 2,048) 46 against 56 ms.
#: ``stats`` (:mod:`contrastive.losses.fused_stats`, the hard sampler): 2N = 2,048 63 against 83 ms.
FUSED_ELEMENTS = {"multiview": 2**21, "dual": 2**22, "stats": 2**22}
#: Fused problems with at most this many similarities run forward and backward on one intra-op thread
#: (CPU tensors, eager, an OpenMP build): there, waking the thread pool costs more than the second
#: thread gives back. On the 2-core benchmark CPU (``OMP_WAIT_POLICY=PASSIVE``) a 64 x 128 by 128 x 64
#: product took 35 us on two threads and 14 us on one, ``exp`` of 64 x 64 floats 25 and 3 us, a product
#: of two 256 x 256 tensors 28 and 11 us; a whole fwd+bwd on one thread against two (alternating rounds):
#: NT-Xent 0.82-0.95x from 2N = 64 to 512, hard 0.89-0.98x to 362 and 1.13x at 512, SupCon 0.88-0.96x
#: to 362 and 1.02x at 512, CLIP 0.76-0.87x to B = 256, 1.00x at 362 and 1.19x at 512.
SERIAL_ELEMENTS = 2**17


@functools.cache
def _openmp_backend() -> bool:
    """Whether ATen's intra-op threads are OpenMP's (the native pool warns when resized after first use)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def on_one_thread(elements: int, like: Tensor, fn: Callable[..., T], *args: Any) -> T:
    """Return ``fn(*args)``, run on one intra-op thread when the problem is small (:data:`SERIAL_ELEMENTS`).

    Only for CPU tensors, outside ``torch.compile`` and on OpenMP builds (where the thread
    count can change at any time); the count is restored afterwards, also on an error.
    """
    if (elements > SERIAL_ELEMENTS or like.device.type != "cpu" or torch.compiler.is_compiling()
            or not _openmp_backend()):
        return fn(*args)
    threads = torch.get_num_threads()
    if threads == 1:
        return fn(*args)
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


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


def _inverse_temperature(temperature: float | Tensor, like: Tensor, validate_args: bool
                         ) -> tuple[float | Tensor, float | None]:
    """Return 1/τ (a float, or a 0-d tensor in the accumulation dtype), checked as the engine checks it,
    and its value in Python where known (a float, or a tensor read by the check: ``validate_args``)."""
    if isinstance(temperature, Tensor):
        value = None
        if validate_args:
            read = float(temperature.detach())
            check_inverse_temperature(read, like.dtype)
            value = 1.0 / read
        return 1.0 / temperature.reshape(()).to(device=like.device, dtype=compute_dtype(like.dtype)), value
    check_inverse_temperature(temperature, like.dtype)
    return 1.0 / temperature, 1.0 / temperature


def _is_direct(bound: float | None, normalize: bool, dtype: torch.dtype) -> bool:
    """Whether ``|s| <= bound`` (unit rows, a Python-known ``1/τ``) allows unshifted exponentials."""
    return normalize and direct_is_safe(bound, (1.0,), dtype)


def fused_multiview_loss(z: Tensor, labels: Tensor | None, temperature: float | Tensor, n_views: int,
                         weights: Tensor | None, options: EngineOptions) -> Tensor:
    """SupCon of the stacked views ``z`` (``labels`` ``(B,)`` int64 or None: pair ids) by :class:`FusedMultiview`."""
    inv_tau, bound = _inverse_temperature(temperature, z, options.validate_args)
    args = (z, labels, inv_tau, weights, n_views, options.normalize,
            _is_direct(bound, options.normalize, compute_dtype(z.dtype)))
    if labels is None or n_views > 1:  # every anchor has a positive (another view)
        return FusedMultiview.apply(*args)
    loss, n_valid = FusedMultiview.apply(*args)
    if options.validate_args:
        check_some_valid(n_valid, options, stacklevel=5)
    return loss


def fused_clip_loss(image: Tensor, text: Tensor, labels: Tensor | None, logit_scale: float | Tensor,
                    weights: Tensor | None, options: EngineOptions, known_scale: float | None = None) -> Tensor:
    """CLIP's loss at multiplier ``e^logit_scale`` by :class:`FusedDual` (``labels`` int64 or None).

    ``known_scale``: a tensor ``logit_scale``'s value θ, when the checks have read it (it bounds
    ``|s| <= e^θ`` for unit rows, which may allow direct exponentials).
    """
    if isinstance(logit_scale, Tensor):
        inv_tau = logit_scale.reshape(()).to(device=image.device, dtype=compute_dtype(image.dtype)).exp()
        bound = None if known_scale is None else math.exp(known_scale)
    else:
        inv_tau = bound = math.exp(logit_scale)
    direct = _is_direct(bound, options.normalize, compute_dtype(image.dtype))
    return FusedDual.apply(image, text, labels, inv_tau, weights, options.normalize, direct)


def _symmetrised(g: Tensor) -> Tensor:
    """Return ``g + gᵀ`` (a new tensor): the transpose copied first, which torch blocks (2-3x faster than ``g + g.T``)."""
    return g.T.contiguous().add_(g)


def _prepare(x: Tensor, normalize: bool) -> tuple[Tensor, Tensor | None]:
    """The rows in the accumulation dtype, unit-norm when ``normalize`` (with their inverse norms)."""
    xc = x.to(compute_dtype(x.dtype))
    return unit_with_inverse_norms(xc) if normalize else (xc, None)


def _anchor_weights(weights: Tensor | None, valid: Tensor | None, repeats: int, dtype: torch.dtype
                    ) -> Tensor | float:
    """Return ``a_b``, the weight in the mean of each of sample b's ``repeats`` anchors (``(B,)``, or a float).

    The anchors' weights sum to one: ``a_b = w_b v_b / (repeats · Σ_c w_c v_c)`` (``w``: ``weights``
    or 1, ``v``: ``valid`` or 1); a float ``1 / (repeats · B)`` when both are None.
    """
    if weights is None and valid is None:
        return 1.0 / repeats  # the caller divides by B (it knows the batch)
    w = valid.to(dtype) if weights is None else weights.to(dtype)
    if weights is not None and valid is not None:
        w = w * valid
    total = w.sum() * repeats
    return w / torch.where(total > 0, total, torch.ones_like(total))


def same_labels(labels: Tensor, dtype: torch.dtype) -> Tensor:
    """The float mask ``[y_i = y_j]`` of ``labels`` (a float mask: products with it beat ``where``)."""
    out = torch.empty(labels.shape[0], labels.shape[0], dtype=dtype, device=labels.device)
    return torch.eq(labels[:, None], labels[None, :], out=out)  # one op: the comparison writes the floats


def _pair_coefficients(labels: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """CLIP's positives: the float mask of equal labels (the pair itself included) and ``1 / |P(i)|``."""
    mask = same_labels(labels, dtype)
    return mask, mask.sum(dim=1).reciprocal_()


def _log2_similarities(a: Tensor, b: Tensor, inv_tau: float | Tensor) -> Tensor:
    """Return ``s·log2(e) = a·bᵀ·log2(e)/τ`` (the scale applied to the ``(N, D)`` rows, not to the matrix)."""
    return torch.mm(a * (inv_tau * LOG2E), b.T)


def _exponentials(s2: Tensor, dim: int, direct: bool, e: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``e = 2^(s2 - m)``, the natural log-sum-exp of ``s = s2·ln 2`` along ``dim`` and ``1 / Σ e``.

    ``m`` is 0 (``direct``; ``e``: the exponentials when already formed) or the line's maximum
    (each line needs a finite entry). ``exp2`` rather than ``exp``: see
    :mod:`contrastive.engine.explog`; the factor ``log2(e)`` is already in ``s2``.
    """
    if direct:
        e = torch.exp2(s2) if e is None else e
        sums = e.sum(dim=dim)
        return e, log(sums), sums.reciprocal()
    peak = s2.amax(dim=dim, keepdim=True)
    e = torch.sub(s2, peak).exp2_()
    sums = e.sum(dim=dim)
    return e, log(sums).add_(peak.view(-1), alpha=LN2), sums.reciprocal()


def group_sums(rows: Tensor, group: Tensor) -> Tensor:
    """Return ``Σ_{c : y_c = y_b} rows_c`` for every sample b (``rows`` ``(B, ...)``): one accumulation, one gather.

    ``index_put_`` rather than ``index_add_``: on the CPU the latter took 0.4-0.6 ms at any
    ``B`` up to 512 (``D = 128``), the former 20 us at 32 and 0.24 ms at 512.
    """
    return torch.zeros_like(rows).index_put_((group,), rows, accumulate=True).index_select(0, group)


class FusedMultiview(torch.autograd.Function):
    """SupCon over ``V`` stacked views against themselves (own column excluded): the loss and its backward.

    ``forward(x, labels, inv_tau, weights, n_views, normalize, direct)``: ``x`` ``(V·B, D)``,
    ``labels`` ``(B,)`` int64 or None (pair ids), ``inv_tau`` a float or 0-d tensor, ``weights``
    ``(B,)`` or None. Returns the loss, and with labels and one view also the number of anchors
    with a positive.

    The positives never take an ``N x N`` mask: with ``k_b = a_b / |P(b)|`` and
    ``S_b = Σ_{c : y_c = y_b} Σ_w z_(w,c)`` (the rows of sample b's label, every view), row
    ``(v, b)`` of ``C z`` is ``k_b (S_b - z_(v,b))``, so ``Σ_ij C_ij s_ij = <z, C z> / τ``, and
    ``C`` is symmetric (``k`` is one value per label) but with labels and weights, where
    ``Cᵀ z = Σ_{c : y_c = y_b} k_c Σ_w z_(w,c) - k_b z_(v,b)``: ``O(N·D)``, and ``C z`` is kept for backward.
    """

    @staticmethod
    def forward(ctx, x, labels, inv_tau, weights, n_views, normalize, direct):  # type: ignore[override]  # noqa: ANN001, ANN205
        """Form ``s`` once (in base 2) and its exponentials; the loss is ``Σ a·lse - Σ C∘s``."""
        return on_one_thread(x.shape[0] ** 2, x, FusedMultiview._forward, ctx, x, labels, inv_tau, weights, n_views,
                             normalize, direct)

    @staticmethod
    def _forward(ctx, x, labels, inv_tau, weights, n_views, normalize, direct):  # noqa: ANN001, ANN205
        """The body of :meth:`forward`."""
        z, inverse = _prepare(x, normalize)
        n, dtype = z.shape[0], z.dtype
        batch = n // n_views
        views = z.view(n_views, batch, -1)
        valid = group = None
        if labels is None:  # the positives of row (v, b) are (w, b), w != v
            sums = views.sum(dim=0)  # S_b = Σ_w z_(w,b)
            count = 1.0
        else:  # S_b by one accumulation over each label's rows; the label's size from the sorted labels
            group, size = label_groups(labels)  # equal labels, equal ids in [0, B)
            sums = group_sums(views.sum(dim=0), group)
            count = size.mul_(n_views)  # (B,) int64: V·|label|, the anchors of b's label
            if n_views == 1:  # a label seen once gives an anchor without positives (2 keeps its k finite)
                valid = count > 1
                count = count.clamp(min=2)
        a = _anchor_weights(weights, valid, n_views, dtype)
        if isinstance(a, float):
            a = a / batch
        # <z, C z>: row (v, b) of C z is k_b (S_b - z_(v,b)) with k_b = a_b / |P(b)|, |P(b)| = V·|label| - 1.
        # k is a float (kept out of cz, applied to the loss and in backward) for pair ids without weights and,
        # with labels and no weights, a (cz divided by |P(b)|: one division for the reciprocal and product)
        cz = torch.sub(sums, views)  # (V, B, D): each anchor's sum of its positives' rows
        if isinstance(count, float):
            k = a / (n_views - 1)
        elif isinstance(a, float):
            k = a
            cz.div_(count.sub(1)[:, None])
        else:
            k = a / count.sub(1).to(dtype)
        if isinstance(k, Tensor):
            cz.mul_(k[:, None])
        positive = torch.mul(cz, views).sum()  # not vdot: a BLAS call wakes its thread pool at any size
        s2 = _log2_similarities(z, z, inv_tau).fill_diagonal_(float("-inf"))  # s·log2(e), own column out
        e, lse, inverse_sums = _exponentials(s2, 1, direct)
        total = lse.sum() * a if isinstance(a, float) else torch.dot(lse.view(n_views, batch).sum(dim=0), a)
        loss = total - positive * (inv_tau * k if isinstance(k, float) else inv_tau)
        ctx.save_for_backward(z, inverse, e, inverse_sums, cz, group,
                              a if isinstance(a, Tensor) else None, k if isinstance(k, Tensor) else None,
                              inv_tau if isinstance(inv_tau, Tensor) else None)
        ctx.scalars = (inv_tau if not isinstance(inv_tau, Tensor) else None, n_views, x.dtype,
                       a if isinstance(a, float) else None, k if isinstance(k, float) else None,
                       weights is not None and group is not None, direct)
        ctx.elements = n * n
        if valid is None:
            return loss
        n_valid = valid.sum()
        ctx.mark_non_differentiable(n_valid)
        return loss, n_valid

    @staticmethod
    def backward(ctx, grad, *_):  # type: ignore[override]  # noqa: ANN001, ANN205
        """``G = a·softmax(s) - C``; ``dz = (G + Gᵀ) z / τ``; ``dτ⁻¹ = ½ <z, (G + Gᵀ) z>``."""
        return on_one_thread(ctx.elements, grad, FusedMultiview._backward, ctx, grad)

    @staticmethod
    def _backward(ctx, grad):  # noqa: ANN001, ANN205
        """The body of :meth:`backward`."""
        z, inverse, e, inverse_sums, cz, group, a, k_t, inv_tau_t = ctx.saved_tensors
        inv_tau_f, n_views, x_dtype, a_float, k_float, weighted, direct = ctx.scalars
        n = z.shape[0]
        batch = n // n_views
        # a·softmax + its transpose: e∘(w_i + w_j) with w = a / Σe when e is unshifted (symmetric to rounding):
        # two products replace a product and the transposed copy
        w = inverse_sums.mul(a_float) if a is None else (inverse_sums.view(n_views, batch) * a).view(n)
        g = torch.mul(e, w[:, None])
        g = g.addcmul_(e, w[None, :]) if direct else _symmetrised(g)
        gz = torch.mm(g, z)
        rows = gz.view(n_views, batch, -1)
        if weighted:  # labels and weights: k varies inside a label, so Cᵀ z is its own accumulation
            views = z.view(n_views, batch, -1)
            own = views.sum(dim=0).mul_(k_t[:, None])
            rows.sub_(cz).sub_(group_sums(own, group)).addcmul_(views, k_t[:, None])
        else:  # C is symmetric: - (C + Cᵀ) z = - 2 C z
            rows.sub_(cz, alpha=2.0 if k_float is None else 2.0 * k_float)
        grad_tau = None
        if ctx.needs_input_grad[2]:
            grad_tau = (torch.vdot(z.view(-1), gz.view(-1)) * (0.5 * grad)).to(inv_tau_t.dtype)
        gz.mul_(grad * (inv_tau_f if inv_tau_t is None else inv_tau_t))
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (gz if inverse is None else unit_rows_backward(gz, z, inverse)).to(x_dtype)
        return grad_x, None, grad_tau, None, None, None, None


class FusedDual(torch.autograd.Function):
    """CLIP's two directions of ``s = x·yᵀ/τ`` (positives: the pair, or every pair with the same label).

    ``forward(x, y, labels, inv_tau, weights, normalize)``: ``x``, ``y`` ``(B, D)``; returns the
    mean of the two directions' losses.
    """

    @staticmethod
    def forward(ctx, x, y, labels, inv_tau, weights, normalize, direct):  # type: ignore[override]  # noqa: ANN001, ANN205
        """Form ``s`` once (in base 2); rows and columns each give a log-sum-exp (one exponential when direct)."""
        return on_one_thread(x.shape[0] * y.shape[0], x, FusedDual._forward, ctx, x, y, labels, inv_tau, weights,
                             normalize, direct)

    @staticmethod
    def _forward(ctx, x, y, labels, inv_tau, weights, normalize, direct):  # noqa: ANN001, ANN205
        """The body of :meth:`forward`."""
        batch = x.shape[0]
        z, inverse = _prepare(torch.cat([x, y]), normalize)
        zx, zy = z[:batch], z[batch:]
        s2 = _log2_similarities(zx, zy, inv_tau)
        e_rows, lse_rows, inv_rows = _exponentials(s2, 1, direct)
        e_cols, lse_cols, inv_cols = _exponentials(s2, 0, direct, e_rows if direct else None)
        a = _anchor_weights(weights, None, 1, z.dtype)
        a = a / batch if isinstance(a, float) else a
        # the loss ½ Σ a (lse_rows + lse_cols) - Σ C∘s: C = a on the diagonal (pairs), or row i's a_i [l_i = l_j] / |P(i)|
        # over 2 plus column j's a_j [l_i = l_j] / |P(j)| over 2 (labels)
        both = lse_rows + lse_cols
        if labels is None:
            coef = None
            positive = s2.diagonal().sum() * a if isinstance(a, float) else torch.dot(s2.diagonal(), a)
        else:
            mask, reciprocal = _pair_coefficients(labels, z.dtype)
            per_row = (a * reciprocal) * 0.5
            coef = (mask * per_row[:, None]).add_(mask * per_row[None, :])
            positive = torch.vdot(coef.view(-1), s2.view(-1))
        loss = (both.sum() * a if isinstance(a, float) else torch.dot(both, a)) * 0.5 - positive * LN2
        ctx.save_for_backward(z, inverse, e_rows, None if direct else e_cols, inv_rows, inv_cols, coef,
                              a if isinstance(a, Tensor) else None, inv_tau if isinstance(inv_tau, Tensor) else None)
        ctx.scalars = (a if isinstance(a, float) else None, inv_tau if not isinstance(inv_tau, Tensor) else None,
                       x.dtype)
        ctx.elements = batch * batch
        return loss

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001, ANN205
        """``G = ½ (a_i softmax_row + a_j softmax_col) - C``; ``dx = G y / τ``, ``dy = Gᵀ x / τ``."""
        return on_one_thread(ctx.elements, grad, FusedDual._backward, ctx, grad)

    @staticmethod
    def _backward(ctx, grad):  # noqa: ANN001, ANN205
        """The body of :meth:`backward`."""
        z, inverse, e_rows, e_cols, inv_rows, inv_cols, coef, a, inv_tau_t = ctx.saved_tensors
        a_float, inv_tau_f, x_dtype = ctx.scalars
        batch = e_rows.shape[0]
        zx, zy = z[:batch], z[batch:]
        half = 0.5 * a_float if a is None else a * 0.5
        g = e_rows * (inv_rows * half)[:, None]
        g.addcmul_(e_rows if e_cols is None else e_cols, (inv_cols * half)[None, :])
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
            gz = (gz if inverse is None else unit_rows_backward(gz, z, inverse)).to(x_dtype)
            grad_x, grad_y = gz[:batch], gz[batch:]
        return grad_x, grad_y, None, grad_tau, None, None, None
