"""SimCLR's NT-Xent loss for any number of views."""

from __future__ import annotations

from typing import Any

import torch

from contrastive.hookspecs import hookimpl
from contrastive.losses.base import EngineLoss, engine_options
from contrastive.losses.supcon import PositiveWeight, multiview_loss
from contrastive.samplers import MemoryQueue

Tensor = torch.Tensor


def nt_xent_loss(
    *views: Tensor,
    temperature: float | Tensor = 0.1,
    negatives: Tensor | MemoryQueue | None = None,
    weights: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """Return the NT-Xent loss of two or more ``views`` (each ``(B, D)``); see :class:`NTXentLoss`.

    ``weights`` ``(B,)``: per-sample weights of the mean. ``options`` are the
    :class:`~contrastive.losses.base.EngineOptions`.
    """
    return _nt_xent(views, temperature, negatives, engine_options(options), weights)


def _nt_xent(views: tuple[Tensor, ...], temperature: float | Tensor, negatives: Tensor | MemoryQueue | None,
             options: Any, weights: Tensor | None = None, positive_weight: PositiveWeight | None = None
             ) -> Tensor:
    """NT-Xent with checked options: SupCon with one label per sample."""
    if len(views) < 2:
        raise ValueError(
            f"nt_xent needs at least two views (the positives are the other views), got {len(views)}; "
            "for one view with class labels use supcon"
        )
    return multiview_loss(views, None, temperature, None, "all", negatives, options, weights, positive_weight)


class NTXentLoss(EngineLoss):
    r"""Normalised temperature-scaled cross entropy (Chen et al., 2020, "A Simple Framework for
    Contrastive Learning of Visual Representations", ICML), for :math:`V \ge 2` views.

    Every view of every sample is an anchor :math:`i`; its positives :math:`P(i)` are the
    other :math:`V-1` views of the same sample; the denominator is every candidate but
    the anchor itself (plus any extra ``negatives``):

    .. math::

        \mathcal{L} = \frac{1}{VB}\sum_i \frac{-1}{|P(i)|}\sum_{p\in P(i)}
            \log\frac{e^{s_{ip}}}{\sum_{a\ne i} e^{s_{ia}}},\qquad
        s_{ia} = \frac{\langle z_i, z_a\rangle}{\tau},

    which for two views is SimCLR's loss. It is SupCon with one label per sample.

    **Distributed** (``gather``, see :mod:`contrastive.distributed`): the local views are
    the anchors and the views of all ranks, gathered with gradient, the candidates; pair
    ids are offset by rank. Rank :math:`r` returns :math:`\frac{W}{VB}\sum_{i\in r} L_i`
    for the global batch of :math:`B` samples (the local mean when ranks hold equal
    batches), so the mean over ranks is the loss of the global batch and DDP's gradient
    averaging gives its exact gradient. Local batch sizes may differ. ``negatives`` are
    not gathered: pass the same on every rank (as a :class:`~contrastive.samplers.MemoryQueue`
    filled with ``enqueue`` under DDP is). The keyword options are the
    :class:`~contrastive.losses.base.EngineOptions`.
    """

    def forward(
        self, *views: Tensor, labels: Tensor | None = None, negatives: Tensor | MemoryQueue | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """Return the loss of ``views`` (each ``(B, D)``), optionally with extra ``negatives`` and ``weights`` ``(B,)``.

        ``labels`` is accepted for the common loss signature and must be ``None``:
        NT-Xent's positives are the other views of each sample; use ``supcon`` for classes.
        """
        if labels is not None:
            raise ValueError(
                "labels must be None for nt_xent (its positives are the other views of the same sample); "
                "use get_loss('supcon') to treat samples with one label as positives"
            )
        return _nt_xent(views, self.temperature, negatives, self.options, weights)


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``nt_xent``."""
    register("nt_xent", NTXentLoss)
