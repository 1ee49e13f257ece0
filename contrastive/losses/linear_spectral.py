"""The linear-representation contrastive loss analysed by Ji et al. (2021), with its penalty on the map."""

from __future__ import annotations

import math

import torch

from contrastive.hookspecs import Register, hookimpl
from contrastive.losses.spectral import _check_pair, _two_views

__all__ = ["LinearSpectralContrastiveLoss", "linear_spectral_contrastive_loss", "weight_penalty"]


def weight_penalty(weight: torch.Tensor) -> torch.Tensor:
    r"""Return :math:`\|W W^\top\|_F^2` (equal to :math:`\|W^\top W\|_F^2`) for a 2-D map ``weight``."""
    if weight.ndim != 2:
        raise ValueError(f"weight must be a 2-D (r, d) matrix, got shape {tuple(weight.shape)}")
    # Use the smaller Gram matrix: r x r or d x d.
    gram = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight
    return gram.square().sum()


def linear_spectral_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    weight: torch.Tensor | None = None,
    reg: float = 1.0,
) -> torch.Tensor:
    """Ji et al.'s linear contrastive loss of two views; see :class:`LinearSpectralContrastiveLoss`."""
    _check_pair(z1, z2)
    n = z1.shape[0]
    _check_reg(reg)
    pos_sum = (z1 * z2).sum()
    # Σ_{i≠j} <z1_i, z2_j> = <Σ_i z1_i, Σ_j z2_j> - Σ_i <z1_i, z2_i>: O(B·r), no B x B matrix.
    neg_sum = z1.sum(dim=0) @ z2.sum(dim=0) - pos_sum
    loss = -pos_sum / n + neg_sum / (n * (n - 1))
    if weight is not None:
        if weight.ndim != 2 or weight.shape[0] != z1.shape[1]:
            raise ValueError(
                f"weight must be the (r, d) map with r = {z1.shape[1]} rows (the views' width), "
                f"got shape {tuple(weight.shape)}"
            )
        loss = loss + 0.5 * reg * weight_penalty(weight)
    return loss


class LinearSpectralContrastiveLoss(torch.nn.Module):
    r"""Contrastive loss for a linear representation :math:`f(x) = Wx`, as analysed by Ji et al.

    For B pairs of views with representations :math:`z^{(1)}_i = W x^{(1)}_i`,
    :math:`z^{(2)}_i = W x^{(2)}_i` (:math:`W \in \mathbb{R}^{r\times d}`),

    .. math::

        \mathcal{L}(W) = -\frac{1}{B}\sum_{i=1}^{B}\langle z^{(1)}_i, z^{(2)}_i\rangle
            + \frac{1}{B(B-1)}\sum_{i\neq j}\langle z^{(1)}_i, z^{(2)}_j\rangle
            + \frac{\lambda}{2}\,\|W W^\top\|_F^2 ,

    the loss of the linear-representation setting of Ji, Deng, Nakada, Zou and
    Zhang, "The Power of Contrast for Feature Learning: A Theoretical Analysis"
    (arXiv:2110.02473): positive pairs pulled together, cross-sample inner
    products pushed down, and the penalty :math:`\frac{\lambda}{2}\|WW^\top\|_F^2`
    without which the loss is unbounded below. With :math:`P = W^\top W` the loss
    is :math:`-\operatorname{tr}(P M) + \frac{\lambda}{2}\|P\|_F^2`, where
    :math:`M` is the symmetrised cross-moment of the views; its minimisers are
    the top-r positive eigenpairs of :math:`M` scaled by :math:`1/\lambda`
    (see :func:`contrastive.linear.masked_contrastive_matrix`).

    The penalty needs the map: call ``loss(z1, z2, weight=W)`` (for an
    ``nn.Linear`` encoder, ``weight=encoder.weight``). Without ``weight`` only
    the first two (contrastive) terms are returned. Both sums are O(B·r);
    no B x B matrix is formed.

    Args:
        reg: the penalty weight :math:`\lambda > 0`.
    """

    def __init__(self, reg: float = 1.0) -> None:
        """Store the penalty weight ``reg``."""
        super().__init__()
        _check_reg(reg)
        self.reg = reg

    def forward(
        self, *views: torch.Tensor, labels: torch.Tensor | None = None, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the loss of two views, each (B, r), plus the penalty when ``weight`` (r, d) is given."""
        z1, z2 = _two_views("linear_spectral", views, labels)
        return linear_spectral_contrastive_loss(z1, z2, weight=weight, reg=self.reg)

    def extra_repr(self) -> str:
        """Show ``reg`` in the module's repr."""
        return f"reg={self.reg}"


def _check_reg(reg: float) -> None:
    if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not math.isfinite(reg) or reg <= 0:
        raise ValueError(f"reg must be a positive finite number (the penalty weight lambda), got reg={reg!r}")


@hookimpl
def register_losses(register: Register) -> None:
    """Register the ``linear_spectral`` loss."""
    register("linear_spectral", LinearSpectralContrastiveLoss)
