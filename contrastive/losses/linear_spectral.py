"""The linear-representation contrastive loss analysed by Ji et al. (2021), with its penalty on the map."""

from __future__ import annotations

import math

import torch

from contrastive.distributed import agreed_layout, all_reduce_max, all_reduce_sum, check_gather, should_gather
from contrastive.engine.reference import compute_dtype
from contrastive.hookspecs import Register, hookimpl
from contrastive.losses.base import common_scale, rescaled, restored
from contrastive.losses.spectral import _check_pair, _two_views

__all__ = ["LinearSpectralContrastiveLoss", "linear_spectral_contrastive_loss", "weight_penalty"]


def weight_penalty(weight: torch.Tensor) -> torch.Tensor:
    r"""Return :math:`\|W W^\top\|_F^2` (equal to :math:`\|W^\top W\|_F^2`) for a 2-D map ``weight``.

    In the accumulation dtype, with ``W`` scaled to entries of magnitude at most 2 first, so
    the value is infinite only if it exceeds that dtype.
    """
    if weight.ndim != 2:
        raise ValueError(f"weight must be a 2-D (r, d) matrix, got shape {tuple(weight.shape)}")
    w = weight.to(compute_dtype(weight.dtype))
    scale = common_scale(w)
    w = rescaled(w, scale, 4)  # the penalty is of degree 4 in W
    # Use the smaller Gram matrix: r x r or d x d.
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return restored(gram.square().sum(), scale, 4)


def linear_spectral_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    weight: torch.Tensor | None = None,
    reg: float = 1.0,
    gather: str | bool = "auto",
    *,
    validate_args: bool = True,
) -> torch.Tensor:
    """Ji et al.'s linear contrastive loss of two views; see :class:`LinearSpectralContrastiveLoss`.

    ``validate_args=False`` skips the checks that read from the device (finite inputs).
    """
    distributed = should_gather(gather)
    (z1, z2), _ = agreed_layout(lambda: _checked(z1, z2, reg, weight, distributed, validate_args),
                                lambda pair: pair[0], "z1", gather)
    dtype = compute_dtype(z1.dtype)
    z1, z2 = z1.to(dtype), z2.to(dtype)
    scale = common_scale(z1, z2)
    if distributed:
        scale = all_reduce_max(scale)  # one scale for the sums of every rank
    z1, z2 = rescaled(z1, scale, 2), rescaled(z2, scale, 2)  # the loss is of degree 2 in the views
    # -pos/B + (Σ_i z1_i · Σ_j z2_j - pos)/(B(B-1)) = -Σ_i (z1_i - m1)·(z2_i - m2)/(B-1), m the means:
    # the centred form cancels exactly where the terms do (identical rows give 0, not ±inf).
    n: float | torch.Tensor = z1.shape[0]
    sums = torch.stack([z1.sum(dim=0), z2.sum(dim=0)])
    if distributed:  # the global means first, then the centred sum: two all-reduces with gradient
        count = torch.full((1,), float(z1.shape[0]), dtype=z1.dtype, device=z1.device)
        total = all_reduce_sum(torch.cat([count, sums.flatten()]))
        n, sums = total[0], total[1:].view(2, -1)
        if validate_args and float(n) < 2:
            raise ValueError(f"views need at least 2 rows (pairs) over all ranks, got B={int(n)}")
    means = sums / n
    centred = ((z1 - means[0]) * (z2 - means[1])).sum()
    if distributed:
        centred = all_reduce_sum(centred)
    loss = restored(-centred / (n - 1), scale, 2)  # the loss of the unscaled rows
    if weight is not None:
        loss = loss + 0.5 * reg * weight_penalty(weight)
    return loss


def _checked(z1: torch.Tensor, z2: torch.Tensor, reg: float, weight: torch.Tensor | None, distributed: bool,
             validate_args: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The local checks: the views (one pair per shard is enough when gathering), ``reg`` and ``weight``."""
    _check_pair(z1, z2, min_rows=1 if distributed else 2, finite=validate_args)
    _check_reg(reg)
    if weight is not None and (weight.ndim != 2 or weight.shape[0] != z1.shape[1]):
        raise ValueError(
            f"weight must be the (r, d) map with r = {z1.shape[1]} rows (the views' width), "
            f"got shape {tuple(weight.shape)}"
        )
    return z1, z2


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
    the first two (contrastive) terms are returned. They equal
    :math:`-\frac{1}{B-1}\sum_i \langle z^{(1)}_i - \bar z^{(1)}, z^{(2)}_i - \bar z^{(2)}\rangle`
    (minus the trace of the views' cross-covariance), which is how they are computed: in
    O(B·r), with no B x B matrix, and without the cancellation of the two sums.

    **Distributed** (``gather``, see :mod:`contrastive.distributed`): nothing is
    gathered; :math:`B` and the sums :math:`\sum_i z^{(1)}_i`, :math:`\sum_i z^{(2)}_i` are
    all-reduced with gradient, then the centred sum, and every rank returns the loss :math:`\mathcal{L}` of the global batch (the penalty
    included, once). Each rank receives :math:`W\,\partial\mathcal{L}/\partial z_r` for its
    own rows and the penalty's gradient for the replicated map, so DDP's gradient
    averaging gives the exact gradient of the global batch. Local batch sizes may differ.

    Args:
        reg: the penalty weight :math:`\lambda > 0`.
        gather: ``"auto"`` (all-reduce when more than one rank is initialised), ``True`` or ``False``.
        validate_args: check the inputs (finite values); ``False`` reads nothing from the device.
    """

    def __init__(self, reg: float = 1.0, gather: str | bool = "auto", *, validate_args: bool = True) -> None:
        """Store the penalty weight ``reg`` and the ``gather`` and ``validate_args`` options."""
        super().__init__()
        _check_reg(reg)
        self.reg = reg
        self.gather = check_gather(gather)
        self.validate_args = bool(validate_args)

    def forward(
        self, *views: torch.Tensor, labels: torch.Tensor | None = None, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the loss of two views, each (B, r), plus the penalty when ``weight`` (r, d) is given."""
        z1, z2 = _two_views("linear_spectral", views, labels)
        return linear_spectral_contrastive_loss(
            z1, z2, weight=weight, reg=self.reg, gather=self.gather, validate_args=self.validate_args
        )

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
