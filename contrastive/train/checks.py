"""Checks before a run trains: the data, a dry run of augmentation, model and loss, the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from contrastive.train.checkpoint import CHECKPOINT_NAME
from contrastive.train.components import make_views
from contrastive.train.config import TrainConfig, TrainError
from contrastive.train.data import Dataset, fingerprint
from contrastive.train.trainer import Trainer

__all__ = ["check_data", "check_dry_run", "restore"]


def check_data(config: TrainConfig, data: Dataset, resumed: bool, allow_change: bool) -> None:
    """Record the data's fingerprint; on resume, a changed one raises unless ``allow_change``."""
    current = fingerprint(data)
    if resumed and config.data_fingerprint not in (None, current) and not allow_change:
        raise TrainError(
            f"--resume: the data {config.data!r} changed since this run started: its fingerprint is now "
            f"{current}, the run's config.toml has {config.data_fingerprint}; pass --allow-data-change "
            "to continue on the new data"
        )
    config.data_fingerprint = current
    if config.batch_size > data.train_index.numel():
        raise TrainError(
            f"--batch-size {config.batch_size} is larger than the {data.train_index.numel()} training "
            f"samples of {config.data!r}; use at most {data.train_index.numel()}"
        )


def check_dry_run(
    model: torch.nn.Module, loss: Any, augmentation: Any, data: Dataset, config: TrainConfig, supervised: bool
) -> None:
    """Run augmentation, model and loss once on a few samples: fail before training starts."""
    x, y = (t[: min(4, config.batch_size)] if t is not None else None for t in data.split("train"))
    try:
        views = make_views(augmentation, x, 2, torch.Generator().manual_seed(0))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TrainError(
            f"augmentation {config.augment!r} cannot augment inputs of shape {tuple(x.shape)}: {exc}"
        ) from None
    model.eval()
    try:
        with torch.no_grad():
            loss(*(model(v) for v in views), **({"labels": y} if supervised else {}))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TrainError(
            f"loss {config.loss!r} failed on two views from encoder {config.encoder!r}: {exc}"
        ) from None
    finally:
        model.train()


def restore(trainer: Trainer, state: dict[str, Any], out: Path) -> None:
    """Load a checkpoint into ``trainer``; contents that do not fit the model raise :class:`TrainError`."""
    try:
        trainer.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainError(
            f"--resume: {str(out / CHECKPOINT_NAME)!r} has the checkpoint format but does not fit this run's "
            f"model and optimizer ({type(exc).__name__}: {first}); start a new run in another --out"
        ) from None
