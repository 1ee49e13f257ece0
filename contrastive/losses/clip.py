"""CLIP's symmetric cross-modal InfoNCE with a learnable logit scale."""

from __future__ import annotations

import math
from typing import Any

import torch

from contrastive._call_styles import logit_scale_as_labels
from contrastive._validation import check_embeddings, check_labels, check_temperature
from contrastive.distributed import all_gather_rows, batch_layout, check_gather, should_gather
from contrastive.engine import dual_row_stats, row_stats
from contrastive.hookspecs import hookimpl
from contrastive.losses.base import anchor_losses, mean_over_valid, sample_labels
from contrastive.samplers import resolve_sampler

Tensor = torch.Tensor


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: float | Tensor = 1.0 / 0.07,
    labels: Tensor | None = None,
    *,
    normalize: bool = True,
    sampler: Any = "uniform",
    backend: str = "auto",
    block_size: int | None = None,
    gather: str | bool = "auto",
) -> Tensor:
    """Return CLIP's loss of paired features ``(B, D)`` at multiplier ``logit_scale`` = 1/τ (see ClipLoss)."""
    if (message := logit_scale_as_labels(labels, function=True)) is not None:  # open_clip's call style
        raise ValueError(message)
    image = check_embeddings(image_features, "image_features")
    text = check_embeddings(text_features, "text_features")
    if image.shape != text.shape or image.dtype != text.dtype:
        raise ValueError(
            f"image_features and text_features must have one shape and dtype, got "
            f"{tuple(image.shape)}/{image.dtype} and {tuple(text.shape)}/{text.dtype}"
        )
    check_temperature(logit_scale, "logit_scale")
    batch = image.shape[0]
    if labels is not None:
        labels = check_labels(labels, batch).to(image.device)
    layout = batch_layout(image, "image_features") if should_gather(gather) else None
    total = batch if layout is None else layout.total
    if total < 2:
        raise ValueError(f"image_features must hold at least two samples, got batch size {total}")
    candidate_labels = sample_labels(labels, batch, image.device, layout)
    first = 0 if layout is None else layout.offset
    anchor_labels = candidate_labels[first : first + batch]
    sampler = resolve_sampler(sampler)
    if normalize:
        image, text = torch.nn.functional.normalize(image, dim=1), torch.nn.functional.normalize(text, dim=1)
    temperature = 1.0 / logit_scale
    if layout is None:  # both directions of one similarity matrix: the engine shares their backward
        both = dual_row_stats(
            image, text, anchor_labels, candidate_labels, temperature, sampler.exponents, backend, block_size
        )
        image_loss, text_loss = (mean_over_valid(*anchor_losses(s, sampler, temperature)) for s in both)
        return (image_loss + text_loss) / 2
    losses = []
    for anchors, candidates in ((image, text), (text, image)):
        if layout is not None:  # the other modality of all ranks, with gradient
            candidates = all_gather_rows(candidates, layout)
        stats = row_stats(
            anchors,
            candidates,
            anchor_labels,
            candidate_labels,
            None,
            temperature,
            sampler.exponents,
            backend,
            block_size,
        )
        valid_losses = anchor_losses(stats, sampler, temperature)
        losses.append(mean_over_valid(*valid_losses, distributed=layout is not None))
    return (losses[0] + losses[1]) / 2


class ClipLoss(torch.nn.Module):
    r"""Symmetric image-text InfoNCE of CLIP (Radford et al., 2021, "Learning Transferable Visual
    Models From Natural Language Supervision", ICML).

    With :math:`t = \min(e^{\theta}, t_{max})` for the learnable ``logit_scale`` :math:`\theta`
    (initialised to :math:`\log(1/0.07)`, capped at :math:`t_{max}=100` as CLIP does) and
    unit-norm features :math:`x_i` (image), :math:`y_i` (text):

    .. math::

        \mathcal{L} = \frac{1}{2B}\sum_i \Big(
            -\log\frac{e^{t\langle x_i,y_i\rangle}}{\sum_j e^{t\langle x_i,y_j\rangle}}
            -\log\frac{e^{t\langle y_i,x_i\rangle}}{\sum_j e^{t\langle y_i,x_j\rangle}}\Big).

    Optional ``labels`` make every pair with a shared label a positive (SupCon form per direction).
    While the cap binds, the scale receives no gradient.

    **Distributed** (``gather``, see :mod:`contrastive.distributed`), as open_clip's
    ``gather_with_grad=True, local_loss=True``: each direction takes the local features
    as anchors and the other modality of all ranks, gathered with gradient, as
    candidates (pair ids offset by rank, ``labels`` compared across ranks). Rank
    :math:`r` returns :math:`\frac{W}{2B}\sum_{i\in r}(\ldots)` for a global batch of
    :math:`B` pairs (the local mean when ranks hold equal batches), so the mean over
    ranks is the loss of the global batch and DDP's gradient averaging gives its exact
    gradient, the logit scale's included when it is a parameter of the DDP module (or
    its gradient is averaged like one). Local batch sizes may differ.
    """

    def __init__(
        self,
        logit_scale: float = math.log(1.0 / 0.07),
        learnable: bool = True,
        max_logit_scale: float = 100.0,
        normalize: bool = True,
        sampler: Any = "uniform",
        backend: str = "auto",
        block_size: int | None = None,
        gather: str | bool = "auto",
    ) -> None:
        """Create the loss with initial log scale ``logit_scale`` (θ, so that t = e^θ)."""
        super().__init__()
        if (
            isinstance(logit_scale, bool)
            or not isinstance(logit_scale, (int, float))
            or not math.isfinite(logit_scale)
        ):
            raise ValueError(
                f"logit_scale must be a finite float (the log of 1/temperature), got {logit_scale!r}"
            )
        check_temperature(max_logit_scale, "max_logit_scale")
        theta = torch.tensor(float(logit_scale))
        if learnable:
            self.logit_scale = torch.nn.Parameter(theta)
        else:
            self.register_buffer("logit_scale", theta)
        self.max_logit_scale = float(max_logit_scale)
        self.normalize = bool(normalize)
        self.sampler = resolve_sampler(sampler)
        self.backend = backend
        self.block_size = block_size
        self.gather = check_gather(gather)

    def scale(self) -> Tensor:
        """Return the multiplier :math:`t = \\min(e^{\\theta}, t_{max})`."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image_features: Tensor, text_features: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return the loss of paired ``image_features`` and ``text_features`` (each ``(B, D)``)."""
        if (message := logit_scale_as_labels(labels)) is not None:  # open_clip's loss(image, text, scale)
            raise ValueError(message)
        return clip_loss(
            image_features,
            text_features,
            self.scale(),
            labels,
            normalize=self.normalize,
            sampler=self.sampler,
            backend=self.backend,
            block_size=self.block_size,
            gather=self.gather,
        )


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``clip``."""
    register("clip", ClipLoss)
