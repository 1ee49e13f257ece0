"""Supervised contrastive loss (SupCon, L_out) over any number of views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from contrastive._validation import (
    check_choice,
    check_finite_views,
    check_supervised_labels,
    check_temperature,
    check_views,
    checked_temperature,
)
from contrastive.distributed import BatchLayout, agreed_layout
from contrastive.engine import RowStats
from contrastive.engine.multilabel import WEIGHTINGS
from contrastive.hookspecs import hookimpl
from contrastive.losses.base import (
    EngineLoss,
    EngineOptions,
    all_anchors_valid,
    anchor_losses,
    check_weights,
    engine_options,
    extra_negatives,
    mean_over_valid,
    multiview_stats,
    sample_labels,
    unit_rows,
)
from contrastive.losses.fused import fused_applies, fused_multiview_loss
from contrastive.losses.fused_stats import fused_multiview_stats, fused_stats_applies
from contrastive.samplers import MemoryQueue

Tensor = torch.Tensor
#: Maps (row statistics, temperature, batch layout) to a per-anchor factor of the positive term.
PositiveWeight = Callable[[RowStats, "float | Tensor", BatchLayout], Tensor]
CONTRAST_MODES = ("all", "one")


def supcon_loss(
    *views: Tensor,
    labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    base_temperature: float | None = None,
    contrast_mode: str = "all",
    negatives: Tensor | MemoryQueue | None = None,
    weights: Tensor | None = None,
    positive_weighting: str = "binary",
    **options: Any,
) -> Tensor:
    """Return the SupCon loss of ``views`` (each ``(B, D)``) with ``labels`` ``(B,)`` or ``(B, K)`` (SupConLoss).

    ``weights`` ``(B,)``: per-sample weights of the mean. ``options`` are the
    :class:`~contrastive.losses.base.EngineOptions` (``normalize``, ``sampler``, ``backend``,
    ``block_size``, ``gather``, ``validate_args``, ``no_positive``, ``decoupled``).
    """
    check_choice(contrast_mode, "contrast_mode", CONTRAST_MODES)
    check_choice(positive_weighting, "positive_weighting", WEIGHTINGS)
    if base_temperature is not None:
        check_temperature(base_temperature, "base_temperature")
    return multiview_loss(views, labels, temperature, base_temperature, contrast_mode, negatives,
                          engine_options(options), weights, positive_weighting=positive_weighting)


def multiview_loss(
    views: tuple[Tensor, ...],
    labels: Tensor | None,
    temperature: float | Tensor,
    base_temperature: float | None,
    contrast_mode: str,
    negatives: Tensor | MemoryQueue | None,
    options: EngineOptions,
    weights: Tensor | None = None,
    positive_weight: PositiveWeight | None = None,
    positive_weighting: str = "binary",
) -> Tensor:
    """SupCon over stacked views with checked ``options``: the body shared by supcon, nt_xent and dcl.

    ``weights`` ``(B,)`` weight each sample's anchors in the mean; ``positive_weight`` maps the
    row statistics to a per-anchor factor of the positive term (DCLW).
    """
    validate = options.validate_args

    def check() -> tuple[float | Tensor, list[Tensor], Tensor, Tensor | None, Tensor | None, Tensor | None]:
        checked = check_views(views, finite=False)
        tau = checked_temperature(temperature, validate)  # a Python float from here on (NumPy scalars too)
        if labels is None and len(checked) < 2:
            raise ValueError(
                "a single view needs labels=: without labels the positives are the other views "
                f"of the same sample, and got {len(checked)} view"
            )
        given = None if labels is None else check_supervised_labels(labels, checked[0].shape[0], validate).to(
            checked[0].device)
        z = torch.cat(checked)
        if validate:
            check_finite_views(z, len(checked))
        return tau, checked, z, given, extra_negatives(negatives, z, options), check_weights(
            weights, checked[0].shape[0], validate)

    (temperature, views, z, labels, extra, weights), layout = agreed_layout(check, lambda c: c[1][0], "views",
                                                                            options.gather)
    # one process, every view an anchor against the others alone, integer (or no) labels: the fused paths
    plain = (layout.world_size == 1 and extra is None and contrast_mode == "all"
             and (labels is None or labels.dim() == 1))
    if plain and positive_weight is None and fused_applies(options, z.shape[0], z.shape[0], weights, z):
        loss = fused_multiview_loss(z, labels, temperature, len(views), weights, options)
        return loss if base_temperature is None else loss * (temperature / base_temperature)
    batch = views[0].shape[0]
    anchors = None if contrast_mode == "all" else batch
    sampler = options.resolved_sampler
    if plain and fused_stats_applies(options, temperature, sampler.exponents, z.shape[0], z):
        stats = fused_multiview_stats(z, labels, temperature, len(views), sampler.exponents)
    else:
        labels = sample_labels(labels, batch, z.device, layout)  # global ones when gathering
        if options.normalize:
            z = unit_rows(z, options.rows_dtype(z))
        stats = multiview_stats(z, labels, layout, len(views), anchors, extra, temperature, sampler, options,
                                positive_weighting)
    factor = None if positive_weight is None else positive_weight(stats, temperature, layout)
    losses, valid = anchor_losses(stats, sampler, temperature, decoupled=options.decoupled, positive_weight=factor)
    if weights is not None:  # per sample: each of its anchors (every view, or the first)
        weights = weights.repeat(len(views)) if anchors is None else weights
    loss = mean_over_valid(losses, None if all_anchors_valid(stats, options.decoupled) else valid, layout, options,
                           weights)
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
    The remaining keyword options are the :class:`~contrastive.losses.base.EngineOptions`.

    **Multi-label** (as asked in pytorch-metric-learning issue #658): ``labels`` may be
    multi-hot rows of shape ``(B, K)`` (bool, integer or floating 0/1), sample b carrying
    the labels :math:`A_b = \{k : y_{bk} = 1\}`. Then :math:`P(i) = \{p \ne i : A_p \cap A_i
    \ne \emptyset\}`, the views sharing at least one label with anchor i; the denominator
    is unchanged, and a sample with no label has no positive (it stays a negative of the
    others). ``positive_weighting="jaccard"`` weights each positive by its label overlap
    :math:`w_{ip} = |A_i \cap A_p| / |A_i \cup A_p|`:

    .. math::

        L_i = \frac{-1}{\sum_{p\in P(i)} w_{ip}}\sum_{p\in P(i)} w_{ip}
        \log\frac{e^{s_{ip}}}{\sum_{a\ne i} e^{s_{ia}}};

    the default ``"binary"`` (:math:`w_{ip} = 1`) is the formula above, and with one label
    per row both equal SupCon of the integer labels. With a sampler other than ``uniform``
    the positives' part of the denominator stays the unweighted :math:`\sum_{p} e^{s_{ip}}`.
    Extra ``negatives`` carry no label (never positives); under ``gather`` the label rows
    are gathered like integer labels. Masks and weights are formed inside the engine's
    tiles; nothing B x B is stored.

    **Distributed** (``gather``, see :mod:`contrastive.distributed`): the local views are
    the anchors; the candidates are the views of all ranks, gathered with gradient, and
    ``labels`` are compared across ranks (pair ids are offset by rank when None). Rank
    :math:`r` returns :math:`\frac{W}{|I'|}\frac{\tau}{\tau_b}\sum_{i\in I'_r} L_i` with
    :math:`|I'|` the anchors with a positive on all ranks, so the mean over ranks is the
    loss of the global batch and DDP's gradient averaging gives its exact gradient.
    Local batch sizes may differ. ``negatives`` are not gathered: pass the same on
    every rank (a :class:`~contrastive.samplers.MemoryQueue` filled with ``enqueue``
    under DDP is).
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.1,
        base_temperature: float | None = None,
        contrast_mode: str = "all",
        positive_weighting: str = "binary",
        **options: Any,
    ) -> None:
        """Create the loss; ``options`` are the :class:`~contrastive.losses.base.EngineOptions`."""
        super().__init__(temperature, **options)
        if base_temperature is not None:
            check_temperature(base_temperature, "base_temperature")
        self.base_temperature = base_temperature
        self.contrast_mode = check_choice(contrast_mode, "contrast_mode", CONTRAST_MODES)
        self.positive_weighting = check_choice(positive_weighting, "positive_weighting", WEIGHTINGS)

    def forward(
        self, *views: Tensor, labels: Tensor | None = None, negatives: Tensor | MemoryQueue | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """Return the loss of ``views`` (each ``(B, D)``) with optional ``labels`` ``(B,)`` or ``(B, K)``
        and sample ``weights`` ``(B,)``."""
        return multiview_loss(views, labels, self.temperature, self.base_temperature, self.contrast_mode,
                              negatives, self.options, weights, positive_weighting=self.positive_weighting)


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``supcon``."""
    register("supcon", SupConLoss)
