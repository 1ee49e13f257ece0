r"""The Triton engine: fused row statistics with O(N) memory, and their autograd.

Same contract as :mod:`contrastive.engine.chunked`: :class:`TritonRowStats` takes exactly
the arguments of ``ChunkedRowStats.apply`` and returns ``(neg_lse (M, E), pos_lse (M,),
pos_sum (M,))``; :class:`SymmetricTritonRowStats` those of ``SymmetricChunkedRowStats``.

* Forward: one launch, one pass over candidate tiles per block of anchors, an online
  log-sum-exp per exponent (:func:`~contrastive.engine.triton_kernels.row_stats_forward_kernel`).
* Backward: recomputes the tiles and forms

  .. math::

      dS_{ij} = \sum_e g_{ie}\gamma_e e^{\gamma_e s_{ij}-\mathrm{lse}_{ie}}[j\in N(i)]
              + (h_i e^{s_{ij}-\mathrm{pos\_lse}_i} + k_i)[j\in P(i)];

  ``dA = dS·C/τ`` row-parallel, ``dC = dSᵀ·A/τ`` column-parallel (deterministic, no
  atomics), ``d(1/τ) = Σ_i <a_i, (dS·C)_i>``. Opt-in with
  ``CONTRASTIVE_TRITON_TILES=columns=atomic``, the row pass also adds ``dSᵀ·A`` into ``dC``
  with atomics when both gradients are needed (one recompute of the tiles instead of two,
  but the summation order, hence the rounding, of ``dC`` varies from run to run). The
  symmetric case computes ``(dS + dSᵀ)·Z`` in one row-parallel pass.

Inputs fp32, bf16, fp16 (accumulated in fp32) or fp64 (accumulated in fp64). ``triton``
is imported only when needed, so this module imports without it; kernels launched while
``TRITON_INTERPRET=1`` is set run in Triton's interpreter (on CPU tensors too).
"""

from __future__ import annotations

import functools
import importlib

import torch

from contrastive.engine.reference import compute_dtype
from contrastive.engine.triton_launch import (
    TileConfig,
    backward_products,
    forward_stats,
    interpreter_enabled,
    tile_config,
)

Tensor = torch.Tensor
#: Input dtypes the kernels accept.
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
#: Input dtypes for which ``backend="auto"`` prefers Triton on CUDA (fp64 stays on the chunked engine).
AUTO_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.cache
def triton_available() -> bool:
    """Return whether the ``triton`` package imports (importing it does not fix interpreted vs compiled)."""
    try:
        importlib.import_module("triton.language")
    except ImportError:
        return False
    return True


def can_launch(device: torch.device) -> bool:
    """Return whether kernels can run on tensors of ``device``: CUDA, or any device under the interpreter."""
    return triton_available() and (device.type == "cuda" or interpreter_enabled())


def auto_prefers_triton(device: torch.device, dtype: torch.dtype) -> bool:
    """Return whether ``backend="auto"`` should use Triton: fp32/bf16/fp16 CUDA tensors, Triton importable."""
    return device.type == "cuda" and dtype in AUTO_DTYPES and triton_available()


def _check_launchable(tensor: Tensor) -> None:
    """Raise ValueError unless ``tensor``'s dtype and device can reach a kernel (Triton importable)."""
    if not triton_available():
        raise ValueError("backend='triton' needs the triton package; install it or use backend='chunked'")
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the Triton engine takes {SUPPORTED_DTYPES} inputs, got {tensor.dtype}")
    if not can_launch(tensor.device):
        raise ValueError(f"the Triton engine runs on CUDA tensors (on others only with TRITON_INTERPRET=1), "
                         f"got tensors on {tensor.device}; use backend='chunked'")


def _prepare(anchors: Tensor, candidates: Tensor, anchor_labels: Tensor, candidate_labels: Tensor,
             anchor_index: Tensor, inv_tau: Tensor) -> tuple[Tensor, ...]:
    """Return contiguous kernel operands: embeddings as given, int64 labels, 1/τ in the accumulation dtype."""
    _check_launchable(anchors)
    dtype = compute_dtype(anchors.dtype)
    return (anchors.contiguous(), candidates.contiguous(), anchor_labels.contiguous().long(),
            candidate_labels.contiguous().long(), anchor_index.contiguous().long(),
            inv_tau.detach().reshape(1).to(device=anchors.device, dtype=dtype))


def _input_gradients(
    a: Tensor, c: Tensor, da: Tensor | None, dc: Tensor | None, inv: Tensor, tau_dtype: torch.dtype,
    need_a: bool, need_c: bool, need_t: bool,
) -> tuple[Tensor | None, ...]:
    """Turn the products ``dS·C`` and ``dSᵀ·A`` into the gradients of a, c and 1/τ (None where unneeded).

    ``d(1/τ) = Σ_ij dS_ij <a_i, c_j> = Σ_i <a_i, (dS·C)_i>``; the embeddings' gradients carry
    the factor ``inv`` = 1/τ of ``s = a·cᵀ/τ`` and return in the inputs' dtypes.
    """
    grad_t = torch.vdot(a.to(inv.dtype).reshape(-1), da.reshape(-1)).to(tau_dtype) if need_t else None
    grad_a = (da * inv).to(a.dtype) if need_a else None
    grad_c = (dc * inv).to(c.dtype) if need_c else None
    return grad_a, grad_c, grad_t


class TritonRowStats(torch.autograd.Function):
    """Row statistics of ``anchors`` against ``candidates`` by the fused kernels (as ``ChunkedRowStats``)."""

    @staticmethod
    def forward(ctx, anchors, candidates, anchor_labels, candidate_labels,  # type: ignore[override]
                anchor_index, inv_tau, exponents, block):
        """Compute ``(neg_lse, pos_lse, pos_sum)`` with one pass over candidate tiles per anchor block."""
        a, c, a_labels, c_labels, a_self, inv = _prepare(anchors, candidates, anchor_labels, candidate_labels,
                                                         anchor_index, inv_tau)
        config = tile_config(anchors.dtype, anchors.shape[1], anchors.device, block)
        lse, pos_lse, pos_sum = forward_stats(a, c, a_labels, c_labels, a_self, inv, exponents, config)
        ctx.save_for_backward(a, c, a_labels, c_labels, a_self, inv_tau, lse, pos_lse)
        ctx.exponents, ctx.config = tuple(float(g) for g in exponents), config
        return lse, pos_lse, pos_sum

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        """Recompute the tiles; return the gradients of anchors, candidates and 1/τ."""
        a, c, a_labels, c_labels, a_self, inv_tau, lse, pos_lse = ctx.saved_tensors
        need_a, need_c, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[5]
        inv = inv_tau.detach().reshape(1).to(lse.dtype)
        da, dc = backward_products(a, c, a_labels, c_labels, a_self, inv, ctx.exponents, grads, lse, pos_lse,
                                   ctx.config, rows=need_a or need_t, columns=need_c)
        grad_a, grad_c, grad_t = _input_gradients(a, c, da, dc, inv, inv_tau.dtype, need_a, need_c, need_t)
        return grad_a, grad_c, None, None, None, grad_t, None, None


class DualTritonRowStats(torch.autograd.Function):
    """Statistics of ``a`` against ``c`` and of ``c`` against ``a`` (CLIP's two directions), one backward.

    Neither side has a self column. Returns ``(neg_lse, pos_lse, pos_sum)`` of the rows, then
    of the columns. The forward makes one pass per direction; the backward forms dS from both
    directions' coefficients at once, so it recomputes the tiles twice (row and column pass)
    instead of four times for two separate :class:`TritonRowStats`.
    """

    @staticmethod
    def forward(ctx, anchors, candidates, anchor_labels, candidate_labels,  # type: ignore[override]
                inv_tau, exponents, block):
        """Compute both directions' statistics with the forward kernel, one launch per direction."""
        no_self = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
        a, c, a_labels, c_labels, a_self, inv = _prepare(anchors, candidates, anchor_labels, candidate_labels,
                                                         no_self, inv_tau)
        c_self = torch.full((c.shape[0],), -1, dtype=torch.long, device=c.device)
        config = tile_config(anchors.dtype, anchors.shape[1], anchors.device, block)
        rows = forward_stats(a, c, a_labels, c_labels, a_self, inv, exponents, config)
        cols = forward_stats(c, a, c_labels, a_labels, c_self, inv, exponents, config)
        ctx.save_for_backward(a, c, a_labels, c_labels, a_self, inv_tau, rows[0], rows[1], cols[0], cols[1])
        ctx.exponents, ctx.config = tuple(float(g) for g in exponents), config
        return (*rows, *cols)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        """One row and one column pass with both directions' coefficients; gradients of a, c and 1/τ."""
        a, c, a_labels, c_labels, a_self, inv_tau, lse, pos_lse, col_lse, col_pos_lse = ctx.saved_tensors
        need_a, need_c, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[4]
        inv = inv_tau.detach().reshape(1).to(lse.dtype)
        da, dc = backward_products(a, c, a_labels, c_labels, a_self, inv, ctx.exponents, grads[:3], lse,
                                   pos_lse, ctx.config, rows=need_a or need_t, columns=need_c,
                                   dual=(grads[3:], col_lse, col_pos_lse))
        # dS holds both directions' terms, so d(1/τ) comes out of dS·C as in the general case
        grad_a, grad_c, grad_t = _input_gradients(a, c, da, dc, inv, inv_tau.dtype, need_a, need_c, need_t)
        return grad_a, grad_c, None, None, grad_t, None, None


class SymmetricTritonRowStats(torch.autograd.Function):
    """Row statistics of ``z`` against itself, self excluded (``SymmetricChunkedRowStats``' contract)."""

    @staticmethod
    def forward(ctx, z, labels, inv_tau, exponents, block):  # type: ignore[override]
        """Compute ``(neg_lse, pos_lse, pos_sum)`` with the general forward kernel, self = own index."""
        index = torch.arange(z.shape[0], device=z.device)
        zc, _, zl, _, z_self, inv = _prepare(z, z, labels, labels, index, inv_tau)
        config = tile_config(z.dtype, z.shape[1], z.device, block)
        lse, pos_lse, pos_sum = forward_stats(zc, zc, zl, zl, z_self, inv, exponents, config)
        ctx.save_for_backward(zc, zl, z_self, inv_tau, lse, pos_lse)
        ctx.exponents, ctx.config = tuple(float(g) for g in exponents), config
        return lse, pos_lse, pos_sum

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        """One row-parallel pass computes ``(dS + dSᵀ)·Z``; return the gradients of z and 1/τ."""
        z, labels, z_self, inv_tau, lse, pos_lse = ctx.saved_tensors
        need_z, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        inv = inv_tau.detach().reshape(1).to(lse.dtype)
        dz, _ = backward_products(z, z, labels, labels, z_self, inv, ctx.exponents, grads, lse, pos_lse,
                                  ctx.config, rows=True, columns=False, symmetric=True)
        # Σ dS∘S = (1/τ)·½·Σ_i <z_i, ((dS + dSᵀ)·Z)_i>, so d(1/τ) = ½ Σ_i <z_i, dz_i>
        grad_t = None
        if need_t:
            grad_t = (0.5 * torch.vdot(z.to(lse.dtype).reshape(-1), dz.reshape(-1))).to(inv_tau.dtype)
        grad_z = (dz * inv).to(z.dtype) if need_z else None
        return grad_z, None, grad_t, None, None


__all__ = ["AUTO_DTYPES", "SUPPORTED_DTYPES", "DualTritonRowStats", "SymmetricTritonRowStats", "TileConfig",
           "TritonRowStats", "auto_prefers_triton", "can_launch", "interpreter_enabled", "tile_config",
           "triton_available"]
