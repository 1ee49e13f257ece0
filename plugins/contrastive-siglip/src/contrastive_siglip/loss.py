r"""SigLIP's pairwise sigmoid loss (Zhai et al., 2023), computed tile by tile.

With paired embeddings :math:`x_i, y_i` (unit-normalised), logits
:math:`\ell_{ij} = t \langle x_i, y_j \rangle + b` and :math:`z_{ij} = 1` for
:math:`i = j`, :math:`-1` otherwise,

.. math::

    \mathcal{L} = -\frac{1}{B} \sum_{i,j} \log \sigma(z_{ij} \ell_{ij})
                = \frac{1}{B} \Big( \sum_{i,j} \operatorname{softplus}(\ell_{ij})
                  - \sum_i \ell_{ii} \Big),

using :math:`\log\sigma(\ell) - \log\sigma(-\ell) = \ell`. The pair sum is
accumulated over ``block x block`` tiles by a custom autograd function whose
backward recomputes each tile (:math:`\partial/\partial \ell_{ij} = \sigma(\ell_{ij})`),
so memory stays O(B·block + B·D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from contrastive.functional import unit_rows

Tensor = torch.Tensor

_HALF = (torch.float16, torch.bfloat16)


class _PairSoftplusSum(torch.autograd.Function):
    """``S = Σ_ij softplus(t·<x_i, y_j> + b)`` without the B x B matrix."""

    @staticmethod
    def forward(ctx, x, y, scale, bias, block):  # type: ignore[override]
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for i0 in range(0, x.shape[0], block):
            for j0 in range(0, y.shape[0], block):
                logits = scale * (x[i0 : i0 + block] @ y[j0 : j0 + block].T) + bias
                total = total + F.softplus(logits).sum()
        ctx.save_for_backward(x, y, scale, bias)
        ctx.block = block
        return total

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, y, scale, bias = ctx.saved_tensors
        block = ctx.block
        dx, dy = torch.zeros_like(x), torch.zeros_like(y)
        d_scale = torch.zeros((), dtype=x.dtype, device=x.device)
        d_bias = torch.zeros((), dtype=x.dtype, device=x.device)
        for i0 in range(0, x.shape[0], block):
            for j0 in range(0, y.shape[0], block):
                xs, ys = x[i0 : i0 + block], y[j0 : j0 + block]
                dots = xs @ ys.T
                p = torch.sigmoid(scale * dots + bias)  # d softplus(l) / dl
                dx[i0 : i0 + block] += scale * (p @ ys)
                dy[j0 : j0 + block] += scale * (p.T @ xs)
                d_scale += (p * dots).sum()
                d_bias += p.sum()
        return grad * dx, grad * dy, grad * d_scale, grad * d_bias, None


def _check(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating tensor (B, D), got {getattr(x, 'shape', type(x))}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def siglip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float = 10.0,
    logit_bias: Tensor | float = -10.0,
    normalize: bool = True,
    block_size: int = 1024,
) -> Tensor:
    """SigLIP's sigmoid loss of paired ``(B, D)`` features at scale ``t`` and bias ``b``."""
    x, y = _check(image_features, "image_features"), _check(text_features, "text_features")
    if x.shape != y.shape:
        raise ValueError(
            f"image_features and text_features must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    dtype = x.dtype
    work = torch.float32 if dtype in _HALF else dtype
    x, y = x.to(work), y.to(work)
    if normalize:
        x, y = unit_rows(x), unit_rows(y)
    scale = torch.as_tensor(logit_scale, dtype=work, device=x.device).reshape(())
    bias = torch.as_tensor(logit_bias, dtype=work, device=x.device).reshape(())
    pair_sum = _PairSoftplusSum.apply(x, y, scale, bias, block_size)
    diagonal = (scale * (x * y).sum(dim=1) + bias).sum()
    return ((pair_sum - diagonal) / x.shape[0]).to(dtype)


class SigLipLoss(torch.nn.Module):
    r"""Pairwise sigmoid loss of SigLIP (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training").

    Every image-text pair is an independent binary classification: matching pairs
    are positives, all others negatives, with a learnable logit scale
    :math:`t = e^{t'}` and bias :math:`b` (initialised, as in the paper, to
    :math:`t = 10` and :math:`b = -10`). See the module docstring for the formula.

    Args:
        init_logit_scale: initial :math:`t` (> 0); learned as :math:`\log t`.
        init_logit_bias: initial :math:`b`.
        normalize: L2-normalise the features first.
        block_size: tile edge of the pair sum.
    """

    def __init__(
        self,
        init_logit_scale: float = 10.0,
        init_logit_bias: float = -10.0,
        normalize: bool = True,
        block_size: int = 1024,
    ) -> None:
        super().__init__()
        if not (math.isfinite(init_logit_scale) and init_logit_scale > 0):
            raise ValueError(f"init_logit_scale must be finite and > 0, got {init_logit_scale!r}")
        if not math.isfinite(init_logit_bias):
            raise ValueError(f"init_logit_bias must be finite, got {init_logit_bias!r}")
        self.log_logit_scale = torch.nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.logit_bias = torch.nn.Parameter(torch.tensor(float(init_logit_bias)))
        self.normalize = bool(normalize)
        self.block_size = block_size

    def forward(self, image_features: Tensor, text_features: Tensor, labels: Tensor | None = None) -> Tensor:
        """The loss of ``(B, D)`` image and text features paired row by row."""
        if labels is not None:
            raise ValueError("labels must be None: SigLIP pairs row i of each input")
        return siglip_loss(
            image_features,
            text_features,
            self.log_logit_scale.exp(),
            self.logit_bias,
            normalize=self.normalize,
            block_size=self.block_size,
        )
