"""Recognise the call styles of other libraries and say what to write here instead.

Users coming from pytorch-metric-learning write ``loss(embeddings, labels)`` and users
coming from open_clip write ``ClipLoss()(image_features, text_features, logit_scale)``.
Both reach this library's losses with an argument of the wrong kind in a known place;
the checks raise a correct but generic error for it. The functions below recognise those
shapes and return the message to raise instead, or ``None`` when the call looks like
something else. They only look at Python-side attributes (type, dtype, shape): no value
is read from the device, except one scalar to quote in a message that is raised anyway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def _is_integer_tensor(x: object) -> bool:
    return (
        isinstance(x, Tensor) and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    )


def labels_among_views(views: Sequence[object], name: str = "views") -> str | None:
    """The message for a 1-D integer tensor passed as a view (PML's ``loss(embeddings, labels)``), or None."""
    for i, view in enumerate(views):
        if not (isinstance(view, Tensor) and view.dim() == 1 and _is_integer_tensor(view)):
            continue
        length = view.shape[0]
        return (
            f"{name}[{i}] is a 1-D integer tensor of shape ({length},), which looks like labels "
            "passed positionally, as in pytorch-metric-learning's loss(embeddings, labels). "
            "Here every positional argument is a view of shape (batch, dim) and labels are a "
            "keyword argument: write loss(embeddings, labels=labels), for example "
            "contrastive.get_loss('supcon')(embeddings, labels=labels) (nt_xent takes no labels: "
            "its positives are the other views of each sample)"
        )
    return None


def _quoted_scalar(x: Tensor) -> str:
    value = float(x.detach().reshape(()))
    return f"{value:.6g}"


def logit_scale_as_labels(labels: object, *, function: bool = False) -> str | None:
    """The message for a float scalar as ``labels`` (open_clip's ``loss(image, text, logit_scale)``), or None.

    ``function``: the caller is the functional ``clip_loss`` rather than the ``ClipLoss`` module.
    """
    if not (isinstance(labels, Tensor) and labels.is_floating_point() and labels.numel() == 1):
        return None
    value = _quoted_scalar(labels)
    log_hint = f"math.log({value}) = {math.log(float(value)):.6g}" if float(value) > 0 else "its logarithm"
    start = (
        f"labels is a floating tensor holding one value ({value}), which looks like open_clip's "
        "call ClipLoss()(image_features, text_features, logit_scale), where logit_scale is the "
        "multiplier exp(theta) of the model's learnable log-scale theta. Labels here are integer "
        "class ids of shape (batch,), and logit_scale means theta itself, the log of the multiplier, "
        "as open_clip's model.logit_scale parameter. "
    )
    if function:
        return start + (
            "Pass it by keyword, without the exponential: "
            "clip_loss(image_features, text_features, logit_scale=model.logit_scale), "
            f"or for a fixed multiplier logit_scale={log_hint}"
        )
    return start + (
        "The ClipLoss module owns theta as its parameter (initialised to log(1/0.07) as in open_clip): "
        "call loss(image_features, text_features), create it as "
        f"contrastive.ClipLoss(logit_scale={log_hint}) to start from this multiplier, and give "
        "loss.parameters() to the optimizer instead of the model's logit_scale; to keep theta in "
        "your model, call contrastive.functional.clip(image_features, text_features, "
        "logit_scale=model.logit_scale)"
    )
