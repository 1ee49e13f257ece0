"""Input checks shared by losses and samplers: each failure is a ValueError naming argument and value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from contrastive._call_styles import labels_among_views

Tensor = torch.Tensor


def check_embeddings(x: object, name: str, finite: bool = True) -> Tensor:
    """Return ``x`` if it is a (``finite``: finite) 2-D floating tensor, else raise ValueError naming ``name``.

    Only the finiteness check reads from the device.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(x).__name__}")
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a 2-D floating tensor (batch, dim), "
            f"got shape {tuple(x.shape)} and dtype {x.dtype}"
        )
    # a non-finite value makes the sum non-finite: one cheap reduction, each element only if it is not
    if finite and not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); embeddings must be finite")
    return x


def check_views(
    views: Sequence[object], min_views: int = 1, name: str = "views", finite: bool = True
) -> list[Tensor]:
    """Return the views as a list after checking they are (``finite``: finite,) equally shaped, >= 2 samples."""
    if len(views) < min_views:
        raise ValueError(f"{name} must hold at least {min_views} tensor(s), got {len(views)}")
    if (message := labels_among_views(views, name)) is not None:  # PML's loss(embeddings, labels)
        raise ValueError(message)
    checked = [check_embeddings(v, f"{name}[{i}]", finite) for i, v in enumerate(views)]
    first = checked[0]
    for i, v in enumerate(checked[1:], start=1):
        if v.shape != first.shape:
            raise ValueError(
                f"{name} must all have one shape, got {name}[0] of shape {tuple(first.shape)} "
                f"and {name}[{i}] of shape {tuple(v.shape)}"
            )
        if v.dtype != first.dtype or v.device != first.device:
            raise ValueError(
                f"{name} must share dtype and device, got {name}[0] ({first.dtype}, {first.device}) "
                f"and {name}[{i}] ({v.dtype}, {v.device})"
            )
    if first.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sample each, got batch size 0")
    return checked


def check_finite_views(stacked: Tensor, n_views: int, name: str = "views") -> None:
    """Raise ValueError naming the first view of ``stacked`` (the views concatenated) holding NaN or Inf.

    One read from the device when every value is finite: a non-finite value makes the sum
    non-finite, and the sum is one cheap reduction (``isfinite`` over every element costs more
    than a small loss); only a non-finite sum (or one that overflowed) checks each view.
    """
    if math.isfinite(float(stacked.detach().sum())):  # the test in Python: isfinite on a 0-d tensor is 4 more ops
        return
    for i, view in enumerate(stacked.chunk(n_views)):
        check_embeddings(view, f"{name}[{i}]")


def check_labels(labels: object, batch_size: int, name: str = "labels") -> Tensor:
    """Return ``labels`` as int64 after checking it is a 1-D integer tensor of length ``batch_size``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a 1-D integer torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must have an integer dtype (e.g. torch.int64), got {labels.dtype}")
    if labels.shape != (batch_size,):
        raise ValueError(
            f"{name} must have shape ({batch_size},) to match the batch, got {tuple(labels.shape)}"
        )
    return labels.long()


def check_supervised_labels(labels: object, batch_size: int, validate: bool, name: str = "labels") -> Tensor:
    """Return class labels ``(B,)`` as int64 or multi-hot labels ``(B, K)`` as uint8 after checking them.

    Multi-hot rows are bool, integer or floating 0/1 tensors with ``K >= 1`` columns; only the
    check of their values (``validate``) reads from the device.
    """
    if not isinstance(labels, Tensor) or labels.dim() != 2:
        return check_labels(labels, batch_size, name)
    if labels.is_complex() or labels.shape[0] != batch_size or labels.shape[1] < 1:
        raise ValueError(
            f"{name} must be integer class labels of shape ({batch_size},) or multi-hot labels of shape "
            f"({batch_size}, K) with K >= 1, got shape {tuple(labels.shape)} and dtype {labels.dtype}"
        )
    if validate and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"multi-hot {name} must hold only 0 and 1 (or False and True)")
    return labels.to(torch.uint8)


def check_temperature(temperature: object, name: str = "temperature") -> Tensor | float:
    """Return ``temperature`` (a tensor as it is, anything else as a Python float) if it is valid.

    Raise ValueError unless it is a finite positive real number or scalar tensor/array. Any real
    number type (``float``, ``int``, ``numpy.float32``, ...), 0-d NumPy arrays and one-element
    tensors are accepted; a tensor's value is read from the device. The float return keeps
    NumPy scalars out of the arithmetic, where they would compute (and overflow) in their own
    precision.
    """
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(temperature.shape)}")
        value = float(temperature.detach())
    elif isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        value = float(temperature)
    elif getattr(temperature, "shape", None) == () and hasattr(temperature, "dtype") and getattr(
        temperature.dtype, "kind", "") in ("f", "i", "u"):
        value = float(temperature)  # a 0-d NumPy array
    else:
        raise ValueError(f"{name} must be a positive float or a scalar tensor, got {temperature!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return temperature if isinstance(temperature, Tensor) else value


def checked_temperature(temperature: object, validate: bool) -> Tensor | float:
    """Check a loss call's temperature: a number always (as a Python float), a tensor when ``validate``.

    Checking a number reads nothing from the device; checking a tensor reads its value.
    """
    if validate or not isinstance(temperature, Tensor):
        return check_temperature(temperature)
    return temperature


def check_unit_interval(value: object, name: str) -> float:
    """Return ``value`` as float if it lies in [0, 1), else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def check_non_negative(value: object, name: str) -> float:
    """Return ``value`` as float if it is finite and >= 0, else raise ValueError naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return str(value)
