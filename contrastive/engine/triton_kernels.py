r"""Triton kernels of the fused similarity engine (imported lazily: needs ``triton``).

All kernels tile :math:`s = a\,c^\top \cdot (1/\tau)` for blocks of anchors ``a`` (rows)
and candidates ``c`` (columns), accumulating each tile over chunks of ``BLOCK_D``
features in ``ACC`` (fp32, or fp64 for fp64 inputs). Masks come from the two label
vectors inside the tile: negatives :math:`N(i) = \{j : y_j \ne y_i\}`, positives
:math:`P(i) = \{j \ne \mathrm{self}(i) : y_j = y_i\}`; or, with ``WORDS > 0``, from
multi-hot bitsets: positives share a bit, negatives share none, self in neither. Exponentials use ``exp2`` on
:math:`t = s \log_2 e`. Nothing of size M x N is written to memory.

Up to :data:`MAX_EXPONENTS` exponents :math:`\gamma_e` are handled by one launch
(``NUM_EXP`` is a compile-time constant, unused ones are compiled out).

This module is imported only after the caller has decided between compiled and
interpreted kernels: ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates.
"""

from __future__ import annotations

import triton
import triton.language as tl

#: The most exponents one kernel launch handles; more are split into groups of this size.
MAX_EXPONENTS = 4
# Globals read inside kernels must be ``tl.constexpr``: compiled Triton rejects plain floats
# (the interpreter does not), which tests/test_engine_triton_compile.py checks without a GPU.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _dot_tile(x_ptr, y_ptr, x_rows, y_rows, num_x, num_y, dim, stride_x, stride_y,
              BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_D: tl.constexpr,
              ACC: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr):
    """Return the ``(BLOCK_X, BLOCK_Y)`` tile ``x[x_rows] · y[y_rows]ᵀ`` over all ``dim`` features, in ACC.

    Operands enter ``tl.dot`` as ``DOT`` (the input dtype, except bf16 under the interpreter,
    whose dot would multiply bf16 bit patterns: there fp32, in which bf16 products are exact).
    """
    acc = tl.zeros((BLOCK_X, BLOCK_Y), dtype=ACC)
    x_base = x_ptr + x_rows.to(tl.int64)[:, None] * stride_x
    y_base = y_ptr + y_rows.to(tl.int64)[:, None] * stride_y
    x_ok = (x_rows < num_x)[:, None]
    y_ok = (y_rows < num_y)[:, None]
    for d0 in range(0, dim, BLOCK_D):
        feats = d0 + tl.arange(0, BLOCK_D)
        f_ok = (feats < dim)[None, :]
        x = tl.load(x_base + feats[None, :], mask=x_ok & f_ok, other=0.0)
        y = tl.load(y_base + feats[None, :], mask=y_ok & f_ok, other=0.0)
        acc = tl.dot(x.to(DOT), tl.trans(y.to(DOT)), acc, input_precision=PRECISION, out_dtype=ACC)
    return acc


@triton.jit
def _online_lse2(m, total, x, mask):
    """Fold the masked entries of ``x`` (log2 domain, rows) into a running max ``m`` and scaled sum ``total``.

    Invariant: :math:`\\sum 2^{x} = \\mathrm{total} \\cdot 2^{m}` over the entries seen so far,
    ``m = -inf`` and ``total = 0`` while none has been seen.
    """
    x = tl.where(mask, x, float("-inf"))
    m_new = tl.maximum(m, tl.max(x, axis=1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    total = total * tl.exp2(m - m_ref) + tl.sum(tl.exp2(x - m_ref[:, None]), axis=1)
    return m_new, total


@triton.jit
def _finish_lse(m, total):
    """Return the natural-log log-sum-exp ``(m + log2 total)·ln 2`` (-inf where nothing was summed)."""
    positive = total > 0.0
    return tl.where(positive, (m + tl.log2(tl.where(positive, total, 1.0))) * LN2, float("-inf"))


@triton.jit
def _same(row_labels, col_labels, row_label_ptr, row_ids, row_ok, col_label_ptr, col_ids, col_ok,
          WORDS: tl.constexpr):
    """Return the tile's mask of pairs with equal labels (``WORDS == 0``) or sharing a label.

    ``WORDS > 0``: the labels are multi-hot bitsets of ``WORDS`` int64 words per row (row-major),
    and a pair shares a label when some word of the two has a common bit.
    """
    if WORDS == 0:
        same = row_labels[:, None] == col_labels[None, :]
    else:
        row_base = row_label_ptr + row_ids.to(tl.int64) * WORDS
        col_base = col_label_ptr + col_ids.to(tl.int64) * WORDS
        row_word = tl.load(row_base, mask=row_ok, other=0)
        col_word = tl.load(col_base, mask=col_ok, other=0)
        same = (row_word[:, None] & col_word[None, :]) != 0
        for w in tl.static_range(1, WORDS):
            row_word = tl.load(row_base + w, mask=row_ok, other=0)
            col_word = tl.load(col_base + w, mask=col_ok, other=0)
            same = same | ((row_word[:, None] & col_word[None, :]) != 0)
    return same


@triton.jit
def _masks(row_labels, row_self, row_ids, row_ok, col_labels, col_ids, num_cols, row_label_ptr, col_label_ptr,
           WORDS: tl.constexpr):
    """Return ``(negative, positive)`` masks of a tile from the labels (self column excluded from P).

    Multi-hot labels (``WORDS > 0``) leave the self column out of N too.
    """
    col_ok = (col_ids < num_cols)[None, :]
    same = _same(row_labels, col_labels, row_label_ptr, row_ids, row_ok, col_label_ptr, col_ids,
                 col_ids < num_cols, WORDS)
    other = col_ids[None, :] != row_self[:, None]
    negative = (same == 0) & col_ok
    if WORDS > 0:
        negative = negative & other
    positive = same & col_ok & other
    return negative, positive


@triton.jit
def row_stats_forward_kernel(
    a_ptr, c_ptr, a_label_ptr, c_label_ptr, a_self_ptr, inv_tau_ptr,
    neg_lse_ptr, pos_lse_ptr, pos_sum_ptr,
    g0, g1, g2, g3,
    M, N, D, stride_a, stride_c, stride_lse,
    NUM_EXP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr, WORDS: tl.constexpr,
):
    r"""Row statistics of ``BLOCK_M`` anchors in one pass over all candidate tiles.

    Stores :math:`\mathrm{neg\_lse}_{ie} = \log\sum_{j\in N(i)} e^{\gamma_e s_{ij}}` for
    ``e < NUM_EXP``, :math:`\mathrm{pos\_lse}_i = \log\sum_{j\in P(i)} e^{s_{ij}}` and
    :math:`\mathrm{pos\_sum}_i = \sum_{j\in P(i)} s_{ij}`, by an online log-sum-exp.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    row_labels = tl.load(a_label_ptr + rows, mask=row_ok, other=0)
    row_self = tl.load(a_self_ptr + rows, mask=row_ok, other=-1)
    inv_tau = tl.load(inv_tau_ptr).to(ACC)
    to_log2 = inv_tau * LOG2E

    m0 = tl.full((BLOCK_M,), float("-inf"), ACC)
    m1 = tl.full((BLOCK_M,), float("-inf"), ACC)
    m2 = tl.full((BLOCK_M,), float("-inf"), ACC)
    m3 = tl.full((BLOCK_M,), float("-inf"), ACC)
    mp = tl.full((BLOCK_M,), float("-inf"), ACC)
    l0 = tl.zeros((BLOCK_M,), ACC)
    l1 = tl.zeros((BLOCK_M,), ACC)
    l2 = tl.zeros((BLOCK_M,), ACC)
    l3 = tl.zeros((BLOCK_M,), ACC)
    lp = tl.zeros((BLOCK_M,), ACC)
    pos_sum = tl.zeros((BLOCK_M,), ACC)

    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_labels = tl.load(c_label_ptr + cols, mask=cols < N, other=0)
        dots = _dot_tile(a_ptr, c_ptr, rows, cols, M, N, D, stride_a, stride_c,
                         BLOCK_M, BLOCK_N, BLOCK_D, ACC, DOT, PRECISION)
        t = dots * to_log2
        negative, positive = _masks(row_labels, row_self, rows, row_ok, col_labels, cols, N, a_label_ptr,
                                    c_label_ptr, WORDS)
        m0, l0 = _online_lse2(m0, l0, t * g0, negative)
        if NUM_EXP > 1:
            m1, l1 = _online_lse2(m1, l1, t * g1, negative)
        if NUM_EXP > 2:
            m2, l2 = _online_lse2(m2, l2, t * g2, negative)
        if NUM_EXP > 3:
            m3, l3 = _online_lse2(m3, l3, t * g3, negative)
        mp, lp = _online_lse2(mp, lp, t, positive)
        pos_sum += tl.sum(tl.where(positive, dots * inv_tau, 0.0), axis=1)

    out = neg_lse_ptr + rows.to(tl.int64) * stride_lse
    tl.store(out, _finish_lse(m0, l0), mask=row_ok)
    if NUM_EXP > 1:
        tl.store(out + 1, _finish_lse(m1, l1), mask=row_ok)
    if NUM_EXP > 2:
        tl.store(out + 2, _finish_lse(m2, l2), mask=row_ok)
    if NUM_EXP > 3:
        tl.store(out + 3, _finish_lse(m3, l3), mask=row_ok)
    tl.store(pos_lse_ptr + rows, _finish_lse(mp, lp), mask=row_ok)
    tl.store(pos_sum_ptr + rows, pos_sum, mask=row_ok)


@triton.jit
def _load_coefficients(coef_ptr, ids, ok, stride_coef, NUM_EXP: tl.constexpr, ACC: tl.constexpr):
    """Load the per-anchor backward coefficients of ``ids`` (zeros outside the problem).

    The coefficient table has columns ``[c_0, σ_0, …, c_{E-1}, σ_{E-1}, h, ρ, k]`` (see the backward kernels).
    """
    base = coef_ptr + ids.to(tl.int64) * stride_coef
    c0 = tl.load(base + 0, mask=ok, other=0.0).to(ACC)
    s0 = tl.load(base + 1, mask=ok, other=0.0).to(ACC)
    c1 = c0
    s1 = s0
    c2 = c0
    s2 = s0
    c3 = c0
    s3 = s0
    if NUM_EXP > 1:
        c1 = tl.load(base + 2, mask=ok, other=0.0).to(ACC)
        s1 = tl.load(base + 3, mask=ok, other=0.0).to(ACC)
    if NUM_EXP > 2:
        c2 = tl.load(base + 4, mask=ok, other=0.0).to(ACC)
        s2 = tl.load(base + 5, mask=ok, other=0.0).to(ACC)
    if NUM_EXP > 3:
        c3 = tl.load(base + 6, mask=ok, other=0.0).to(ACC)
        s3 = tl.load(base + 7, mask=ok, other=0.0).to(ACC)
    h = tl.load(base + 2 * NUM_EXP, mask=ok, other=0.0).to(ACC)
    rho = tl.load(base + 2 * NUM_EXP + 1, mask=ok, other=0.0).to(ACC)
    k = tl.load(base + 2 * NUM_EXP + 2, mask=ok, other=0.0).to(ACC)
    return c0, s0, c1, s1, c2, s2, c3, s3, h, rho, k


@triton.jit
def _masked_exp2(x, mask):
    """Return ``2**x`` where ``mask`` and 0 elsewhere (never evaluating 2**x outside the mask)."""
    return tl.exp2(tl.where(mask, x, float("-inf")))


@triton.jit
def _dsim(t, negative, positive, g0, g1, g2, g3,
          c0, s0, c1, s1, c2, s2, c3, s3, h, rho, k, NUM_EXP: tl.constexpr):
    r"""Return :math:`\partial L/\partial s` on a tile from :math:`t = s\log_2 e` and broadcast coefficients.

    :math:`\sum_e c_e\, 2^{\gamma_e t - \sigma_e}[N] + (h\, 2^{t-\rho} + k)[P]`, with
    :math:`c_e = \gamma_e\,\partial L/\partial \mathrm{neg\_lse}_e`,
    :math:`\sigma_e = \mathrm{neg\_lse}_e\log_2 e`,
    :math:`h = \partial L/\partial \mathrm{pos\_lse}`, :math:`\rho = \mathrm{pos\_lse}\log_2 e`,
    :math:`k = \partial L/\partial \mathrm{pos\_sum}`.
    """
    ds = c0 * _masked_exp2(t * g0 - s0, negative)
    if NUM_EXP > 1:
        ds += c1 * _masked_exp2(t * g1 - s1, negative)
    if NUM_EXP > 2:
        ds += c2 * _masked_exp2(t * g2 - s2, negative)
    if NUM_EXP > 3:
        ds += c3 * _masked_exp2(t * g3 - s3, negative)
    ds += h * _masked_exp2(t - rho, positive) + tl.where(positive, k, 0.0)
    return ds


@triton.jit
def row_stats_backward_rows_kernel(
    a_ptr, c_ptr, a_label_ptr, c_label_ptr, a_self_ptr, inv_tau_ptr, coef_ptr, col_coef_ptr, out_ptr, dc_ptr,
    g0, g1, g2, g3,
    M, N, D, stride_a, stride_c, stride_coef, stride_out, stride_dc,
    NUM_EXP: tl.constexpr, COLUMN_COEFS: tl.constexpr, ATOMIC_COLUMNS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr, WORDS: tl.constexpr,
):
    r"""Row-parallel backward: ``out[I, F] = Σ_j dS_{Ij} c_{jF}`` for a block of anchors I and features F.

    Recomputes each tile of ``s`` and forms ``dS`` with :func:`_dsim` from the anchors'
    coefficients. With ``COLUMN_COEFS`` the candidates are anchors too, with their own
    coefficients in ``col_coef_ptr``, and :math:`dS_{ij}` gains the column direction's
    term from candidate j's coefficients on the same ``s_ij``. This needs masks symmetric
    in (i, j): the symmetric case (``c is a``, self = own index, ``col_coef_ptr = coef_ptr``,
    so ``out = (dS + dSᵀ)·Z`` is the whole gradient in one pass) and the dual case of
    :func:`~contrastive.engine.triton_launch.backward_products` (no self anywhere).

    With ``ATOMIC_COLUMNS`` (not in the symmetric case, whose ``out`` is already whole) the same pass also
    adds ``dS_{IJ}ᵀ · a_{IF}`` of every tile into ``dc[J, F]`` with ``tl.atomic_add``, so
    that ``dc = dSᵀ·A`` needs no column-parallel pass. ``dc`` is an ACC buffer that the
    caller zeroes (or that holds earlier exponent groups' sums); the order in which the
    anchor blocks add into it is not deterministic. Off, ``dc_ptr``/``stride_dc`` are unused.
    """
    pid_m = tl.program_id(0)
    pid_f = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    feats = pid_f * BLOCK_DV + tl.arange(0, BLOCK_DV)
    feat_ok = feats < D
    row_labels = tl.load(a_label_ptr + rows, mask=row_ok, other=0)
    row_self = tl.load(a_self_ptr + rows, mask=row_ok, other=-1)
    to_log2 = tl.load(inv_tau_ptr).to(ACC) * LOG2E
    c0, s0, c1, s1, c2, s2, c3, s3, h, rho, k = _load_coefficients(coef_ptr, rows, row_ok, stride_coef,
                                                                     NUM_EXP, ACC)
    if ATOMIC_COLUMNS:
        # the block's own anchor features, the right factor of every tile's dSᵀ·A
        a_f = tl.load(a_ptr + rows.to(tl.int64)[:, None] * stride_a + feats[None, :],
                      mask=row_ok[:, None] & feat_ok[None, :], other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        col_labels = tl.load(c_label_ptr + cols, mask=col_ok, other=0)
        t = _dot_tile(a_ptr, c_ptr, rows, cols, M, N, D, stride_a, stride_c,
                      BLOCK_M, BLOCK_N, BLOCK_D, ACC, DOT, PRECISION) * to_log2
        negative, positive = _masks(row_labels, row_self, rows, row_ok, col_labels, cols, N, a_label_ptr,
                                    c_label_ptr, WORDS)
        ds = _dsim(t, negative, positive, g0, g1, g2, g3,
                   c0[:, None], s0[:, None], c1[:, None], s1[:, None], c2[:, None], s2[:, None],
                   c3[:, None], s3[:, None], h[:, None], rho[:, None], k[:, None], NUM_EXP)
        if COLUMN_COEFS:
            d0, t0, d1, t1, d2, t2, d3, t3, hc, rc, kc = _load_coefficients(
                col_coef_ptr, cols, col_ok, stride_coef, NUM_EXP, ACC)
            ds += _dsim(t, negative, positive, g0, g1, g2, g3,
                        d0[None, :], t0[None, :], d1[None, :], t1[None, :], d2[None, :], t2[None, :],
                        d3[None, :], t3[None, :], hc[None, :], rc[None, :], kc[None, :], NUM_EXP)
        values = tl.load(c_ptr + cols.to(tl.int64)[:, None] * stride_c + feats[None, :],
                         mask=col_ok[:, None] & feat_ok[None, :], other=0.0)
        acc = tl.dot(ds.to(DOT), values.to(DOT), acc, input_precision=PRECISION, out_dtype=ACC)
        if ATOMIC_COLUMNS:
            # rows outside the problem have zero coefficients, hence zero dS, and zero a_f
            dc_tile = tl.dot(tl.trans(ds).to(DOT), a_f.to(DOT), input_precision=PRECISION, out_dtype=ACC)
            tl.atomic_add(dc_ptr + cols.to(tl.int64)[:, None] * stride_dc + feats[None, :], dc_tile,
                          mask=col_ok[:, None] & feat_ok[None, :], sem="relaxed")
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_out + feats[None, :], acc,
             mask=row_ok[:, None] & feat_ok[None, :])


@triton.jit
def row_stats_backward_columns_kernel(
    a_ptr, c_ptr, a_label_ptr, c_label_ptr, a_self_ptr, inv_tau_ptr, coef_ptr, col_coef_ptr, out_ptr,
    g0, g1, g2, g3,
    M, N, D, stride_a, stride_c, stride_coef, stride_out,
    NUM_EXP: tl.constexpr, COLUMN_COEFS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr, WORDS: tl.constexpr,
):
    r"""Column-parallel backward: ``out[J, F] = Σ_i dS_{iJ} a_{iF}`` for a block of candidates J.

    Works on the transposed tile :math:`s^\top = c\,a^\top/\tau` (candidates along rows), so
    the anchors' coefficients broadcast along the tile's columns; no atomics, deterministic.
    With ``COLUMN_COEFS`` (the dual case: masks symmetric, no self) the candidates' own
    coefficients from ``col_coef_ptr`` add their direction's term, as in the row pass.
    """
    pid_n = tl.program_id(0)
    pid_f = tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    feats = pid_f * BLOCK_DV + tl.arange(0, BLOCK_DV)
    feat_ok = feats < D
    col_labels = tl.load(c_label_ptr + cols, mask=col_ok, other=0)
    to_log2 = tl.load(inv_tau_ptr).to(ACC) * LOG2E
    if COLUMN_COEFS:  # the program's own candidates: one load, broadcast along the tile's rows
        d0, t0, d1, t1, d2, t2, d3, t3, hc, rc, kc = _load_coefficients(
            col_coef_ptr, cols, col_ok, stride_coef, NUM_EXP, ACC)
    acc = tl.zeros((BLOCK_N, BLOCK_DV), dtype=ACC)
    for m0 in range(0, M, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        row_labels = tl.load(a_label_ptr + rows, mask=row_ok, other=0)
        row_self = tl.load(a_self_ptr + rows, mask=row_ok, other=-1)
        c0, s0, c1, s1, c2, s2, c3, s3, h, rho, k = _load_coefficients(coef_ptr, rows, row_ok, stride_coef,
                                                                         NUM_EXP, ACC)
        t = _dot_tile(c_ptr, a_ptr, cols, rows, N, M, D, stride_c, stride_a,
                      BLOCK_N, BLOCK_M, BLOCK_D, ACC, DOT, PRECISION) * to_log2
        # masks of the transposed tile: candidates (cols) along axis 0, anchors (rows) along axis 1
        same = _same(col_labels, row_labels, c_label_ptr, cols, col_ok, a_label_ptr, rows, row_ok, WORDS)
        inside = col_ok[:, None] & row_ok[None, :]
        other = cols[:, None] != row_self[None, :]
        negative = (same == 0) & inside
        if WORDS > 0:
            negative = negative & other
        positive = same & inside & other
        ds_t = _dsim(t, negative, positive, g0, g1, g2, g3,
                     c0[None, :], s0[None, :], c1[None, :], s1[None, :], c2[None, :], s2[None, :],
                     c3[None, :], s3[None, :], h[None, :], rho[None, :], k[None, :], NUM_EXP)
        if COLUMN_COEFS:
            ds_t += _dsim(t, negative, positive, g0, g1, g2, g3,
                          d0[:, None], t0[:, None], d1[:, None], t1[:, None], d2[:, None], t2[:, None],
                          d3[:, None], t3[:, None], hc[:, None], rc[:, None], kc[:, None], NUM_EXP)
        values = tl.load(a_ptr + rows.to(tl.int64)[:, None] * stride_a + feats[None, :],
                         mask=row_ok[:, None] & feat_ok[None, :], other=0.0)
        acc = tl.dot(ds_t.to(DOT), values.to(DOT), acc, input_precision=PRECISION, out_dtype=ACC)
    tl.store(out_ptr + cols.to(tl.int64)[:, None] * stride_out + feats[None, :], acc,
             mask=col_ok[:, None] & feat_ok[None, :])
