"""Per-epoch evaluation on the held-out split, with the metrics of :mod:`contrastive.metrics`."""

from __future__ import annotations

from typing import Any

import torch

from contrastive.metrics import alignment, effective_rank, knn_accuracy, linear_probe_accuracy, uniformity
from contrastive.train.components import make_views
from contrastive.train.data import Dataset
from contrastive.train.models import ContrastiveModel

__all__ = ["baselines", "embed", "evaluate", "probes"]

#: inputs per forward pass when embedding a whole split
EVAL_BATCH = 1024


@torch.no_grad()
def embed(module: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``module(x)`` in eval mode, in batches, on CPU as float32 (the train/eval mode is restored)."""
    was_training = module.training
    module.eval()
    try:
        parts = [
            module(x[i : i + EVAL_BATCH].to(device)).float().cpu() for i in range(0, x.shape[0], EVAL_BATCH)
        ]
    finally:
        module.train(was_training)
    return torch.cat(parts)


def probes(
    train_h: torch.Tensor, train_y: torch.Tensor | None, test_h: torch.Tensor, test_y: torch.Tensor | None
) -> dict[str, float | None]:
    """Linear-probe and kNN accuracy of features fitted on the train split and scored on the held-out one."""
    if train_y is None or test_y is None:
        return {"linear_probe_accuracy": None, "knn_accuracy": None}
    return {
        "linear_probe_accuracy": linear_probe_accuracy(train_h, train_y, test_h, test_y),
        "knn_accuracy": knn_accuracy(train_h, train_y, test_h, test_y),
    }


def evaluate(
    model: ContrastiveModel, augmentation: Any, data: Dataset, device: torch.device, seed: int
) -> dict[str, Any]:
    """Alignment and uniformity (Wang & Isola 2020) of the projections of two held-out views, effective rank
    of the held-out features, and the probes on the encoder's features.

    The views are drawn from a generator seeded with ``seed``, so evaluation never
    touches the training randomness.
    """
    train_x, train_y = data.split("train")
    test_x, test_y = data.split("test")
    views = make_views(augmentation, test_x, 2, torch.Generator().manual_seed(seed))
    z1, z2 = (embed(model, v, device) for v in views)
    test_h = embed(model.encoder, test_x, device)
    train_h = embed(model.encoder, train_x, device)
    return {
        "alignment": alignment(z1, z2).item(),
        "uniformity": uniformity(torch.cat([z1, z2])).item(),
        "effective_rank": effective_rank(test_h).item(),
        **probes(train_h, train_y, test_h, test_y),
    }


def baselines(
    random_encoder: torch.nn.Module, data: Dataset, device: torch.device
) -> dict[str, float | None]:
    """The linear probe on a randomly initialised encoder and on the raw (flattened) inputs."""
    train_x, train_y = data.split("train")
    test_x, test_y = data.split("test")
    random_probe = probes(
        embed(random_encoder, train_x, device), train_y, embed(random_encoder, test_x, device), test_y
    )
    raw_probe = probes(train_x.flatten(1), train_y, test_x.flatten(1), test_y)
    return {
        "random_init_linear_probe_accuracy": random_probe["linear_probe_accuracy"],
        "raw_input_linear_probe_accuracy": raw_probe["linear_probe_accuracy"],
    }
