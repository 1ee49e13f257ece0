r"""The fused small-problem path of the split statistics: a sampler's row statistics from one matrix.

The hard and debiased samplers, DCL (``decoupled``) and any sampler with exponents
:math:`\gamma_e` need the negatives apart from the positives, so the joint Functions of
:mod:`contrastive.losses.fused` do not serve them. For a single-process SupCon / NT-Xent
problem small enough to hold (``FUSED_ELEMENTS["stats"]`` of :mod:`contrastive.losses.fused`) with unit
rows and a float temperature such that every :math:`|\gamma s|` stays below
:data:`~contrastive.engine.tiles.DIRECT_LIMIT`, :class:`FusedMultiviewStats` forms
``s = z·zᵀ/τ`` once (in base 2), its exponentials once (``e^{2s}`` as a product, never a second
``exp2``) and returns the :class:`~contrastive.engine.RowStats` tensors

.. math::

    \mathrm{neg\_lse}_{ie} = \log \sum_{j\in N(i)} e^{\gamma_e s_{ij}},\quad
    \mathrm{pos\_lse}_i = \log \sum_{p\in P(i)} e^{s_{ip}},\quad
    \mathrm{pos\_sum}_i = \sum_{p\in P(i)} s_{ip},

with a hand-written backward,
:math:`\partial/\partial s_{ij} = \sum_e g_{ie}\gamma_e e^{\gamma_e s_{ij}}/S_{ie}\,[j\in N(i)]
+ (h_i e^{s_{ij}}/S^P_i + k_i)\,[j\in P(i)]` and ``dz = (G + Gᵀ) z / τ``. The masks are
float multiplications (pair ids: strided writes on the block diagonals), not ``where``. The
sampler's formula and the mean then run on these O(N) statistics as on the engine's.
Nothing reads a value back from the device.
"""

from __future__ import annotations

import torch

from contrastive.engine import RowStats
from contrastive.engine.explog import LN2, log
from contrastive.engine.reference import compute_dtype
from contrastive.engine.stats import LabelStructure
from contrastive.engine.tiles import direct_is_safe
from contrastive.losses.base import EngineOptions, is_uniform, unit_rows_backward
from contrastive.losses.fused import (
    _inverse_temperature,
    _log2_similarities,
    _prepare,
    _symmetrised,
    fused_size_fits,
    on_one_thread,
    same_labels,
)

Tensor = torch.Tensor


def fused_stats_applies(options: EngineOptions, temperature: float | Tensor, exponents: tuple[float, ...],
                        rows: int, like: Tensor) -> bool:
    """Whether a single-process multiview problem of ``rows`` stacked views takes :class:`FusedMultiviewStats`.

    Python-known: a sampler other than uniform or ``decoupled`` (the uniform, coupled loss has
    its own fused Function and, above it, the tiles), the chunked backend (``auto`` off
    Triton) with automatic tiles, unit rows (``normalize=True``), a float temperature with
    ``max |γ| / τ`` within the direct limit, at least two rows and at most
    ``FUSED_ELEMENTS["stats"]`` similarities.
    """
    if (is_uniform(options.resolved_sampler) and not options.decoupled) or not options.normalize:
        return False
    if isinstance(temperature, Tensor) or not fused_size_fits(options, rows, rows, like, "stats"):
        return False
    return direct_is_safe(1.0 / temperature, exponents, compute_dtype(like.dtype))


def fused_multiview_stats(z: Tensor, labels: Tensor | None, temperature: float, n_views: int,
                          exponents: tuple[float, ...]) -> RowStats:
    """The :class:`~contrastive.engine.RowStats` of the stacked views ``z`` (normalised inside) against themselves.

    ``labels`` ``(B,)`` int64 (positives: the other rows with the label) or None (pair ids:
    the other views of the sample).
    """
    n = z.shape[0]
    inv_tau, _ = _inverse_temperature(temperature, z, False)  # a float: the check is Python's
    neg_lse, pos_lse, pos_sum = FusedMultiviewStats.apply(z, labels, inv_tau, n_views, exponents)
    if labels is None:  # the same counts for every anchor, known in Python
        known = (n_views - 1, n - n_views)
        pos_count, neg_count = (torch.full((n,), k, dtype=torch.long, device=z.device) for k in known)
    else:
        known = None
        pos_count, neg_count = LabelStructure.of(labels.repeat(n_views), None, None).counts()
    return RowStats(neg_lse, pos_lse, pos_sum, pos_count, neg_count, exponents, known_counts=known)


def _exponentials(s: Tensor, negatives: Tensor, exponents: tuple[float, ...], mask) -> list[Tensor]:  # noqa: ANN001
    """``e^{γ s}`` over the negatives for each exponent (``s`` in base 2: ``2^{γ s}``); products where they add up."""
    done: dict[float, Tensor] = {1.0: negatives}
    out = []
    for gamma in exponents:
        if gamma not in done:
            if gamma == 2.0:
                done[gamma] = negatives * negatives
            elif gamma - 1.0 in done:
                done[gamma] = done[gamma - 1.0] * negatives
            else:
                done[gamma] = mask(torch.mul(s, gamma).exp2_())
        out.append(done[gamma])
    return out


class FusedMultiviewStats(torch.autograd.Function):
    """Split row statistics of ``V`` stacked views against themselves (own column excluded), in direct mode.

    ``forward(x, labels, inv_tau, n_views, exponents)``: ``x`` ``(V·B, D)`` (normalised
    inside), ``labels`` ``(B,)`` int64 or None (pair ids), ``inv_tau`` a float. Returns
    ``(neg_lse (V·B, E), pos_lse (V·B,), pos_sum (V·B,))``.
    """

    @staticmethod
    def forward(ctx, x, labels, inv_tau, n_views, exponents):  # type: ignore[override]  # noqa: ANN001, ANN205
        """Form ``s`` and ``e^s`` once; split them into negatives and positives with float masks."""
        return on_one_thread(x.shape[0] ** 2, x, FusedMultiviewStats._forward, ctx, x, labels, inv_tau, n_views,
                             exponents)

    @staticmethod
    def _forward(ctx, x, labels, inv_tau, n_views, exponents):  # noqa: ANN001, ANN205
        """The body of :meth:`forward`."""
        z, inverse = _prepare(x, True)
        n = z.shape[0]
        batch = n // n_views
        s = _log2_similarities(z, z, inv_tau)  # s·log2(e): its sums are scaled by ln 2 below
        e = torch.exp2(s)
        if labels is None:  # positives on the block diagonals (w != v); the main diagonal is the self
            blocks_s = s.view(n_views, batch, n_views, batch).diagonal(dim1=1, dim2=3)  # (V, V, B)
            pos_sum = (blocks_s.sum(dim=1) - s.diagonal().view(n_views, batch)).reshape(n).mul_(LN2)
            blocks_e = e.view(n_views, batch, n_views, batch).diagonal(dim1=1, dim2=3)
            positive = blocks_e.clone()
            positive.diagonal(dim1=0, dim2=1).zero_()  # (V, V, B): e^{s_ip} for w != v, 0 at w = v
            blocks_e.zero_()  # e: the negatives only

            def mask(t: Tensor) -> Tensor:
                t.view(n_views, batch, n_views, batch).diagonal(dim1=1, dim2=3).zero_()
                return t

            pos_total = positive.sum(dim=1).reshape(n)
            same = None
        else:
            same = same_labels(labels.repeat(n_views), s.dtype)
            negative = 1.0 - same  # 0 on the diagonal too
            same.fill_diagonal_(0.0)  # from here on: the positives
            positive = e * same
            e.mul_(negative)

            def mask(t: Tensor) -> Tensor:
                return t.mul_(negative)

            pos_total = positive.sum(dim=1)
            pos_sum = (s * same).sum(dim=1).mul_(LN2)
        terms = _exponentials(s, e, exponents, mask)
        # every sum in one (n, E + 1) tensor: one log, one reciprocal (0 for an empty set, whose log is -inf)
        totals = torch.stack([t.sum(dim=1) for t in terms] + [pos_total], dim=1)
        logs = log(totals)
        scales = totals.reciprocal()
        if labels is not None or n == n_views:  # a set can be empty; else every e^{γs} >= e^{-40} makes totals > 0
            scales = torch.where(totals > 0, scales, torch.zeros_like(totals))
        ctx.save_for_backward(z, inverse, positive, same, scales, *terms)
        ctx.scalars = (inv_tau, n_views, exponents, x.dtype)
        ctx.elements = n * n
        return logs[:, :-1], logs[:, -1], pos_sum

    @staticmethod
    def backward(ctx, g_neg, g_pos_lse, g_pos_sum):  # type: ignore[override]  # noqa: ANN001, ANN205
        """``G = Σ_e (g_e γ_e / S_e) e^{γ_e s} + (h / S^P) e^s + k`` on the sets; ``dz = (G + Gᵀ) z / τ``."""
        like = next(g for g in (g_neg, g_pos_lse, g_pos_sum) if g is not None)
        return on_one_thread(ctx.elements, like, FusedMultiviewStats._backward, ctx, g_neg, g_pos_lse, g_pos_sum)

    @staticmethod
    def _backward(ctx, g_neg, g_pos_lse, g_pos_sum):  # noqa: ANN001, ANN205
        """The body of :meth:`backward`."""
        z, inverse, positive, same, all_scales, *terms = ctx.saved_tensors
        scales, pos_scale = all_scales[:, :-1], all_scales[:, -1]
        inv_tau, n_views, exponents, x_dtype = ctx.scalars
        n = z.shape[0]
        batch = n // n_views
        dtype = z.dtype
        g_neg = torch.zeros_like(scales) if g_neg is None else g_neg.to(dtype)
        h = scales.new_zeros(n) if g_pos_lse is None else g_pos_lse.to(dtype) * pos_scale
        k = scales.new_zeros(n) if g_pos_sum is None else g_pos_sum.to(dtype)
        coef = g_neg * scales  # γ_e is applied in the products below
        g = terms[0] * (coef[:, :1] if exponents[0] == 1.0 else coef[:, :1] * exponents[0])
        for e, term in enumerate(terms[1:], start=1):
            g.addcmul_(term, coef[:, e : e + 1], value=exponents[e])
        if same is None:
            blocks = g.view(n_views, batch, n_views, batch).diagonal(dim1=1, dim2=3)  # (V, V, B) view
            part = positive * h.view(n_views, 1, batch) + k.view(n_views, 1, batch)
            part.diagonal(dim1=0, dim2=1).zero_()  # the self is no positive
            blocks.add_(part)
        else:
            g.addcmul_(positive, h[:, None]).addcmul_(same, k[:, None])
        gz = torch.mm(_symmetrised(g), z)
        gz.mul_(inv_tau)
        grad_x = unit_rows_backward(gz, z, inverse).to(x_dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None
