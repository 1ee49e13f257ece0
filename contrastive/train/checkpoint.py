"""Atomic checkpoints that ``torch.load(weights_only=True)`` reads back."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from contrastive.train.config import TrainError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
#: stored in every checkpoint; a file without it is not trusted by --resume
CHECKPOINT_FORMAT = "contrastive-train-checkpoint/1"
_KEYS = ("epoch", "step", "model", "optimizer", "rng", "history", "config")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _refusal(exc: BaseException) -> str:
    """The reason a weights-only load gave, without torch's advice to load the file unrestricted."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "")
    advice = ("weights_only", "Weights only load failed", "documentation of torch.load", "file an issue")
    kept = [line for line in lines if not any(w in line for w in advice)]
    return kept[0] if kept else type(exc).__name__


def load_checkpoint(path: Path, purpose: str = "--resume") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a bad file raises :class:`TrainError` (one line)."""
    if not path.is_file():
        raise TrainError(
            f"{purpose}: {str(path)!r} does not exist; there is no checkpoint "
            "(a run writes one at the end of each epoch)"
        )
    try:
        with (
            warnings.catch_warnings()
        ):  # torch warns about pickle protocols it may not read; it then says why
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # garbage, or objects to import and call: refused, never run
        raise TrainError(
            f"{purpose}: {str(path)!r} is not a readable checkpoint: the weights-only load refused it "
            f"({_refusal(exc)}); nothing in it was run"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise TrainError(
            f"{purpose}: {str(path)!r} is not a readable checkpoint ({type(exc).__name__}: {_refusal(exc)})"
        ) from None
    if (
        not isinstance(state, dict)
        or state.get("format") != CHECKPOINT_FORMAT
        or any(k not in state for k in _KEYS)
    ):
        raise TrainError(
            f"{purpose}: {str(path)!r} is not a checkpoint of contrastive train ({CHECKPOINT_FORMAT})"
        )
    return state
