"""Supervised contrastive loss (SupCon, L_out) over any number of views."""

from __future__ import annotations

from typing import Any

import torch

from contrastive._validation import check_choice, check_labels, check_temperature, check_views
from contrastive.hookspecs import hookimpl
from contrastive.losses.base import (
    EngineLoss,
    anchor_losses,
    dense_labels,
    extra_negatives,
    mean_over_valid,
    multiview_stats,
    normalize_views,
)
from contrastive.samplers import MemoryQueue, resolve_sampler

Tensor = torch.Tensor
CONTRAST_MODES = ("all", "one")


def supcon_loss(
    *views: Tensor,
    labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    base_temperature: float | None = None,
    contrast_mode: str = "all",
    normalize: bool = True,
    sampler: Any = "uniform",
    negatives: Tensor | MemoryQueue | None = None,
    backend: str = "auto",
    block_size: int | None = None,
) -> Tensor:
    """Return the SupCon loss of ``views`` (each ``(B, D)``) with ``labels`` ``(B,)`` (see SupConLoss)."""
    views = check_views(views)
    check_temperature(temperature)
    check_choice(contrast_mode, "contrast_mode", CONTRAST_MODES)
    if base_temperature is not None:
        check_temperature(base_temperature, "base_temperature")
    batch = views[0].shape[0]
    if labels is None:
        if len(views) < 2:
            raise ValueError(
                "a single view needs labels=: without labels the positives are the other views "
                f"of the same sample, and got {len(views)} view"
            )
        labels = torch.arange(batch, device=views[0].device)
    else:
        labels = dense_labels(check_labels(labels, batch).to(views[0].device))
        if len(views) == 1 and int(torch.bincount(labels).max()) < 2:
            raise ValueError(
                "no anchor has a positive: with one view every label in labels occurs once; "
                "pass a second view or labels shared by two samples"
            )
    sampler = resolve_sampler(sampler)
    z = torch.cat(normalize_views(views, normalize))
    all_labels = labels.repeat(len(views))
    extra = extra_negatives(negatives, z, normalize)
    anchors = None if contrast_mode == "all" else batch
    stats = multiview_stats(z, all_labels, anchors, extra, temperature, sampler, backend, block_size)
    loss = mean_over_valid(*anchor_losses(stats, sampler, temperature))
    if base_temperature is not None:
        loss = loss * (temperature / base_temperature)
    return loss


class SupConLoss(EngineLoss):
    r"""Supervised contrastive loss :math:`\mathcal{L}^{sup}_{out}` (Khosla et al., 2020, NeurIPS).

    Every view of every sample is an anchor (``contrast_mode="all"``; ``"one"`` uses the
    first view only); its positives :math:`P(i)` are all other views with the same label:

    .. math::

        \mathcal{L} = \frac{\tau}{\tau_b}\,\frac{1}{|I'|}\sum_{i\in I'} \frac{-1}{|P(i)|}\sum_{p\in P(i)}
        \log\frac{e^{s_{ip}}}{\sum_{a\ne i} e^{s_{ia}}},\qquad s_{ia}=\frac{\langle z_i,z_a\rangle}{\tau},

    with :math:`\tau_b` = ``base_temperature`` (no scaling when None). Anchors with no
    positive (a label seen once, one view) are left out of the mean :math:`I'`; a batch
    with no positive at all is a ValueError. Without labels it equals :class:`NTXentLoss`.
    A sampler other than ``uniform`` replaces the negative part of the denominator.
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.1,
        base_temperature: float | None = None,
        contrast_mode: str = "all",
        normalize: bool = True,
        sampler: Any = "uniform",
        backend: str = "auto",
        block_size: int | None = None,
    ) -> None:
        """Create the loss; see :func:`supcon_loss` for the options."""
        super().__init__(temperature, normalize, sampler, backend, block_size)
        if base_temperature is not None:
            check_temperature(base_temperature, "base_temperature")
        self.base_temperature = base_temperature
        self.contrast_mode = check_choice(contrast_mode, "contrast_mode", CONTRAST_MODES)

    def forward(
        self, *views: Tensor, labels: Tensor | None = None, negatives: Tensor | MemoryQueue | None = None
    ) -> Tensor:
        """Return the loss of ``views`` (each ``(B, D)``) with optional ``labels`` ``(B,)``."""
        return supcon_loss(
            *views,
            labels=labels,
            base_temperature=self.base_temperature,
            contrast_mode=self.contrast_mode,
            negatives=negatives,
            **self.engine_options(),
        )


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``supcon``."""
    register("supcon", SupConLoss)
