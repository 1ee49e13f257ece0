"""CLIP's symmetric cross-modal InfoNCE with a learnable logit scale."""

from __future__ import annotations

import math
from typing import Any

import torch

from contrastive._call_styles import logit_scale_as_labels
from contrastive._validation import check_embeddings, check_labels, check_temperature
from contrastive.distributed import agreed_layout, all_gather_rows
from contrastive.engine import RowStats, dual_row_stats, row_stats
from contrastive.engine.dispatch import INVERSE_TEMPERATURE_HEADROOM
from contrastive.hookspecs import hookimpl
from contrastive.losses.fused import fused_applies, fused_clip_loss
from contrastive.losses.base import (
    EngineLoss,
    EngineOptions,
    anchor_losses,
    candidate_similarity_sums,
    check_label_smoothing,
    check_weights,
    engine_options,
    mean_over_valid,
    sample_labels,
    unit_rows,
)

Tensor = torch.Tensor
#: Largest |θ|: the multiplier e^θ stays within the engine's bound on 1/τ in float32
#: (:data:`~contrastive.engine.dispatch.INVERSE_TEMPERATURE_HEADROOM`), ~66.5.
MAX_LOG_SCALE = math.log(torch.finfo(torch.float32).max / INVERSE_TEMPERATURE_HEADROOM)


def _check_logit_scale(logit_scale: object, validate_args: bool) -> float | None:
    """Raise ValueError unless ``logit_scale`` (θ, the log of the multiplier) is a finite real or scalar tensor.

    Return θ as a float where it is known in Python (a float, or a tensor read by the check).
    """
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got a tensor of shape {tuple(logit_scale.shape)}")
        if not validate_args:
            return None
        value = float(logit_scale.detach())
    elif isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        value = float(logit_scale)
    else:
        raise ValueError(f"logit_scale must be a float or a scalar tensor (θ = log of 1/τ), got {logit_scale!r}")
    if not (math.isfinite(value) and abs(value) < MAX_LOG_SCALE):
        raise ValueError(
            f"logit_scale is θ, the log of the multiplier 1/τ = e^θ, and must be finite and within "
            f"±{MAX_LOG_SCALE:.2f} (so that e^θ and e^-θ are finite); got {value!r}"
        )
    return value


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    labels: Tensor | None = None,
    *,
    logit_scale: float | Tensor = math.log(1.0 / 0.07),
    label_smoothing: float = 0.0,
    weights: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """Return CLIP's loss of paired features ``(B, D)`` at multiplier ``e^logit_scale`` (see :class:`ClipLoss`).

    ``logit_scale`` is θ, the log of the multiplier, as open_clip's ``model.logit_scale``
    parameter (pass the parameter itself, not its exponential). ``label_smoothing`` and
    ``weights`` ``(B,)`` (per pair) are as in :class:`ClipLoss`. ``options`` are the
    :class:`~contrastive.losses.base.EngineOptions`.
    """
    if (message := logit_scale_as_labels(labels, function=True)) is not None:  # open_clip's call style
        raise ValueError(message)
    checked = engine_options(options)
    return _clip(image_features, text_features, labels, logit_scale, checked,
                 check_label_smoothing(label_smoothing, checked), weights)


def _clip(image_features: Tensor, text_features: Tensor, labels: Tensor | None, logit_scale: float | Tensor,
          options: EngineOptions, label_smoothing: float = 0.0, weights: Tensor | None = None) -> Tensor:
    """CLIP with checked options."""
    validate = options.validate_args

    def check() -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, float | None]:
        image = check_embeddings(image_features, "image_features", validate)
        text = check_embeddings(text_features, "text_features", validate)
        if image.shape != text.shape or image.dtype != text.dtype:
            raise ValueError(
                f"image_features and text_features must have one shape and dtype, got "
                f"{tuple(image.shape)}/{image.dtype} and {tuple(text.shape)}/{text.dtype}"
            )
        known = _check_logit_scale(logit_scale, validate)
        given = None if labels is None else check_labels(labels, image.shape[0]).to(image.device)
        return image, text, given, check_weights(weights, image.shape[0], validate), known

    (image, text, given, weights, known), layout = agreed_layout(check, lambda c: c[0], "image_features",
                                                                 options.gather)
    batch = image.shape[0]
    if layout.total < 1:
        raise ValueError("image_features must hold at least one sample, got batch size 0")
    if layout.world_size == 1 and not label_smoothing and fused_applies(options, batch, batch, weights, image, "dual"):
        return fused_clip_loss(image, text, given, logit_scale, weights, options, known)
    temperature = torch.exp(-logit_scale) if isinstance(logit_scale, Tensor) else math.exp(-logit_scale)
    candidate_labels = sample_labels(given, batch, image.device, layout)
    anchor_labels = candidate_labels[layout.offset : layout.offset + batch]
    if options.normalize:
        image, text = (unit_rows(x, options.rows_dtype(x)) for x in (image, text))
    sampler = options.resolved_sampler
    engine = {"temperature": temperature, **options.engine(sampler)}
    if layout.world_size == 1:  # both directions of one similarity matrix: one pass over its tiles
        both = dual_row_stats(image, text, anchor_labels, candidate_labels, **engine)
        others = (text, image)
    else:  # each direction against the other modality of all ranks, with gradient
        others = (all_gather_rows(text, layout), all_gather_rows(image, layout))
        both = [row_stats(anchors, candidates, anchor_labels, candidate_labels, **engine)
                for anchors, candidates in zip((image, text), others, strict=True)]

    def direction(stats: RowStats, anchors: Tensor, candidates: Tensor) -> Tensor:
        smoothing = None
        if label_smoothing:
            smoothing = (label_smoothing, candidate_similarity_sums(anchors, candidates, temperature))
        losses, valid = anchor_losses(stats, sampler, temperature, decoupled=options.decoupled, smoothing=smoothing)
        return mean_over_valid(losses, valid, layout, options, weights)

    image_loss, text_loss = (direction(*d) for d in zip(both, (image, text), others, strict=True))
    return (image_loss + text_loss) / 2


class ClipLoss(EngineLoss):
    r"""Symmetric image-text InfoNCE of CLIP (Radford et al., 2021, "Learning Transferable Visual
    Models From Natural Language Supervision", ICML).

    With the multiplier :math:`t = e^{\theta}` of the learnable ``logit_scale`` :math:`\theta`
    (open_clip's convention: the parameter is the log, initialised to :math:`\log(1/0.07)`)
    and unit-norm features :math:`x_i` (image), :math:`y_i` (text):

    .. math::

        \mathcal{L} = \frac{1}{2B}\sum_i \Big(
            -\log\frac{e^{t\langle x_i,y_i\rangle}}{\sum_j e^{t\langle x_i,y_j\rangle}}
            -\log\frac{e^{t\langle y_i,x_i\rangle}}{\sum_j e^{t\langle y_i,x_j\rangle}}\Big).

    CLIP caps :math:`t` at ``max_logit_scale`` (100) by clamping the parameter after each
    optimiser step: call :meth:`clamp_logit_scale_` then, or :meth:`register_clamp` once with
    the optimiser. The forward pass does not clamp, so :math:`\theta` keeps its gradient.
    Optional ``labels`` make every pair with a shared label a positive (SupCon form per
    direction).

    ``label_smoothing=ε`` smooths the targets as ``torch.nn.functional.cross_entropy``
    does: each direction's target puts :math:`1-\epsilon` on the positive(s) and spreads
    :math:`\epsilon` uniformly over the :math:`C` candidates, so the per-anchor loss is
    :math:`\log\sum_j e^{s_{ij}} - (1-\epsilon)\,\bar s_{iP} - \frac{\epsilon}{C}\sum_j s_{ij}`.
    The last sum is :math:`\langle x_i, \sum_j y_j\rangle t`, one more O(B·D) statistic: nothing
    B x B is formed. ``weights`` ``(B,)`` passed to ``forward`` weight each pair in the mean.
    The remaining keyword options are the :class:`~contrastive.losses.base.EngineOptions`.

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
        label_smoothing: float = 0.0,
        **options: Any,
    ) -> None:
        """Create the loss with initial log scale ``logit_scale`` (θ, so that the multiplier is e^θ)."""
        if isinstance(logit_scale, Tensor):
            raise ValueError("logit_scale must be a float here (the initial θ); the module owns the parameter")
        _check_logit_scale(logit_scale, True)
        check_temperature(max_logit_scale, "max_logit_scale")
        super().__init__(None, **options)  # the temperature is derived from the parameter
        theta = torch.tensor(float(logit_scale))
        if learnable:
            self.logit_scale = torch.nn.Parameter(theta)
        else:
            self.register_buffer("logit_scale", theta)
        self.max_logit_scale = float(max_logit_scale)
        self.label_smoothing = check_label_smoothing(label_smoothing, self.options)

    @property
    def temperature(self) -> Tensor:
        """The temperature :math:`e^{-\\theta}` (a tensor that carries θ's gradient)."""
        return torch.exp(-self.logit_scale)

    def scale(self) -> Tensor:
        """Return the multiplier :math:`t = e^{\\theta}`."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp θ in place to :math:`[0, \\log t_{max}]`, as CLIP does after every optimiser step."""
        self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))

    def register_clamp(self, optimizer: torch.optim.Optimizer) -> Any:
        """Clamp θ after every ``optimizer.step()``; return the hook handle (``.remove()`` undoes it)."""
        return optimizer.register_step_post_hook(lambda *_: self.clamp_logit_scale_())

    def forward(self, image_features: Tensor, text_features: Tensor, labels: Tensor | None = None, *,
                weights: Tensor | None = None) -> Tensor:
        """Return the loss of paired ``image_features`` and ``text_features`` (each ``(B, D)``).

        ``weights`` ``(B,)``: per-pair weights of the mean (both directions).
        """
        if (message := logit_scale_as_labels(labels)) is not None:  # open_clip's loss(image, text, scale)
            raise ValueError(message)
        return _clip(image_features, text_features, labels, self.logit_scale, self.options, self.label_smoothing,
                     weights)

    def extra_repr(self) -> str:
        """Show the options."""
        o = self.options
        return (f"logit_scale={float(self.logit_scale.detach()):.4g}, max_logit_scale={self.max_logit_scale}, "
                f"normalize={o.normalize}, backend={o.backend!r}, gather={o.gather!r}, "
                f"validate_args={o.validate_args}")


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``clip``."""
    register("clip", ClipLoss)
