"""Decoupled contrastive learning (DCL) and its von Mises-Fisher weighted form (DCLW)."""

from __future__ import annotations

import math
from typing import Any

import torch

from contrastive.distributed import BatchLayout, all_reduce_max, all_reduce_sum
from contrastive.engine import RowStats
from contrastive.engine.explog import exp_
from contrastive.hookspecs import hookimpl
from contrastive.losses.base import EngineLoss, engine_options
from contrastive.losses.supcon import PositiveWeight, multiview_loss
from contrastive.samplers import MemoryQueue

Tensor = torch.Tensor


def dcl_loss(
    *views: Tensor,
    labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    weight_sigma: float | None = None,
    negatives: Tensor | MemoryQueue | None = None,
    weights: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """Return the DCL loss (DCLW with ``weight_sigma``) of ``views`` (each ``(B, D)``); see :class:`DCLLoss`.

    ``options`` are the :class:`~contrastive.losses.base.EngineOptions` (``decoupled`` is always True).
    """
    positive_weight = None if weight_sigma is None else von_mises_fisher_weights(weight_sigma)
    return multiview_loss(views, labels, temperature, None, "all", negatives, engine_options(_decoupled(options)),
                          weights, positive_weight)


def _decoupled(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``decoupled=True``; ValueError if they ask for anything else."""
    if options.get("decoupled", True) is not True:
        raise ValueError(f"dcl is the decoupled loss: decoupled must be True (or left out), got "
                         f"{options['decoupled']!r}; use nt_xent or supcon for the coupled one")
    return {**options, "decoupled": True}


def _check_sigma(weight_sigma: object) -> float | None:
    if weight_sigma is None:
        return None
    if isinstance(weight_sigma, bool) or not isinstance(weight_sigma, (int, float)) or not (
            math.isfinite(weight_sigma) and weight_sigma > 0):
        raise ValueError(f"weight_sigma must be a finite float > 0 or None, got {weight_sigma!r}")
    return float(weight_sigma)


def von_mises_fisher_weights(weight_sigma: float) -> PositiveWeight:
    r"""DCLW's weighting of the positive term: :math:`w_i = 2 - |A|\,\mathrm{softmax}_i(c_i/\sigma)`.

    :math:`c_i` is anchor :math:`i`'s mean similarity to its positives (the cosine of the
    pair for two normalised views, :math:`\tau\,\bar s_{iP}`) and the softmax runs over the
    anchors :math:`A` that enter the mean, of all ranks when gathering (so a rank's weights
    are those of the global batch). The weights are constants: no gradient flows through
    them (as in lightly's ``DCLWLoss``).
    """
    sigma = _check_sigma(weight_sigma)
    assert sigma is not None

    def weigh(stats: RowStats, temperature: float | Tensor, layout: BatchLayout) -> Tensor:
        valid = (stats.pos_count > 0) & (stats.neg_count > 0)
        tau = temperature.detach() if isinstance(temperature, Tensor) else temperature
        cosine = (stats.pos_sum.detach() / stats.pos_count.clamp(min=1)) * tau
        x = torch.where(valid, cosine / sigma, torch.full((), -math.inf, dtype=cosine.dtype, device=cosine.device))
        peak = x.max() if x.numel() else torch.full((), -math.inf, dtype=x.dtype, device=x.device)
        count = valid.sum().to(x.dtype)
        gathering = layout.world_size > 1
        if gathering:
            peak = all_reduce_max(peak)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        e = exp_(x - peak)  # 0 for anchors outside the mean
        total = e.sum()
        if gathering:
            total, count = all_reduce_sum(torch.stack([total, count])).detach().unbind(0)
        return 2 - count * e / torch.where(total > 0, total, torch.ones_like(total))

    return weigh


class DCLLoss(EngineLoss):
    r"""Decoupled contrastive loss (Yeh et al., 2022, "Decoupled Contrastive Learning", ECCV).

    NT-Xent with the positives left out of the denominator: for anchor :math:`i` with
    positives :math:`P(i)` (the other views of its sample, or of its class when ``labels``
    are given) and negatives :math:`N(i)` (every other candidate but the anchor itself),

    .. math::

        L_i = -\frac{w_i}{|P(i)|}\sum_{p\in P(i)} s_{ip} + \log\sum_{n\in N(i)} e^{s_{in}},
        \qquad s_{ij} = \frac{\langle z_i, z_j\rangle}{\tau},

    averaged over the anchors with a positive and a negative (Eq. 6 of the paper for two
    views, summed over both directions). DCL is :math:`w_i = 1`; DCLW (``weight_sigma=σ``)
    weights the positive term by the negative von Mises-Fisher weights
    :math:`w_i = 2 - |A|\,e^{c_i/\sigma} / \sum_{a\in A} e^{c_a/\sigma}`,
    :math:`c_i` the cosine of the positive pair (:func:`von_mises_fisher_weights`).
    Equal to ``NTXentLoss(decoupled=True)`` (``SupConLoss(decoupled=True)`` with labels) when
    ``weight_sigma`` is None. Samplers replace the sum over negatives as in the other
    losses; ``negatives`` and ``weights`` are as in :class:`~contrastive.NTXentLoss`.

    **Versus lightly.** The values equal lightly's ``DCLLoss`` and ``DCLWLoss`` (1.6.0) for
    two views, the weights being its ``negative_mises_fisher_weights`` (constants, no
    gradient). Earlier lightly releases added two log-sum-exps, one over the anchor's own
    view and one over the other, where the paper takes one over all negatives (fixed after
    lightly-ai/lightly PR #1826); this loss follows the paper.

    The remaining keyword options are the :class:`~contrastive.losses.base.EngineOptions`
    (``decoupled`` is always True).
    """

    def __init__(self, temperature: float | Tensor = 0.1, weight_sigma: float | None = None, **options: Any
                 ) -> None:
        """Create the loss; ``weight_sigma`` turns on DCLW's positive weights."""
        super().__init__(temperature, **_decoupled(options))
        self.weight_sigma = _check_sigma(weight_sigma)
        self._positive_weight = None if self.weight_sigma is None else von_mises_fisher_weights(self.weight_sigma)

    def forward(
        self, *views: Tensor, labels: Tensor | None = None, negatives: Tensor | MemoryQueue | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """Return the loss of ``views`` (each ``(B, D)``) with optional ``labels``, ``negatives`` and ``weights``."""
        return multiview_loss(views, labels, self.temperature, None, "all", negatives, self.options, weights,
                              self._positive_weight)

    def extra_repr(self) -> str:
        """Show the options and ``weight_sigma``."""
        return f"{super().extra_repr()}, weight_sigma={self.weight_sigma}"


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``dcl``."""
    register("dcl", DCLLoss)
