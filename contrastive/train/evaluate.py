"""Per-epoch evaluation on the held-out split, with the metrics of :mod:`contrastive.metrics`."""

from __future__ import annotations

from typing import Any

import torch

from contrastive.metrics import alignment, effective_rank, knn_accuracy, linear_probe_accuracy, uniformity
from contrastive.train.components import make_views
from contrastive.train.data import Dataset
from contrastive.train.models import ContrastiveModel

__all__ = ["baselines", "embed", "evaluate", "few_label_probe", "few_label_probes", "probes"]

#: inputs per forward pass when embedding a whole split
EVAL_BATCH = 1024
#: the few-label probe: labelled training samples per class, and how many random draws are averaged
FEW_LABELS_PER_CLASS = 10
FEW_LABEL_DRAWS = 5


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


def few_label_subsets(train_y: torch.Tensor, per_class: int, draws: int, seed: int) -> list[torch.Tensor]:
    """``draws`` index sets of ``per_class`` random training samples of each class (all, if fewer)."""
    g = torch.Generator().manual_seed(seed)
    subsets = []
    for _ in range(draws):
        parts = []
        for c in torch.unique(train_y):
            members = (train_y == c).nonzero().squeeze(1)
            parts.append(members[torch.randperm(members.numel(), generator=g)[:per_class]])
        subsets.append(torch.cat(parts).sort().values)
    return subsets


def few_label_probe(
    train_h: torch.Tensor,
    train_y: torch.Tensor,
    test_h: torch.Tensor,
    test_y: torch.Tensor,
    subsets: list[torch.Tensor],
) -> float:
    """Mean held-out accuracy of linear probes each fitted on one labelled subset of the training split."""
    accuracies = [linear_probe_accuracy(train_h[s], train_y[s], test_h, test_y) for s in subsets]
    return sum(accuracies) / len(accuracies)


def few_label_probes(
    features: dict[str, tuple[torch.Tensor, torch.Tensor]],
    data: Dataset,
    seed: int,
    per_class: int = FEW_LABELS_PER_CLASS,
    draws: int = FEW_LABEL_DRAWS,
) -> dict[str, float | None]:
    """``{prefix}few_label_probe_accuracy`` for each ``prefix: (train features, held-out features)``.

    Every representation is probed on the same ``draws`` subsets of ``per_class`` labelled
    training samples per class (seeded with ``seed``); None without labels.
    """
    train_y, test_y = data.split("train")[1], data.split("test")[1]
    if train_y is None or test_y is None:
        return {f"{prefix}few_label_probe_accuracy": None for prefix in features}
    subsets = few_label_subsets(train_y, per_class, draws, seed)
    return {
        f"{prefix}few_label_probe_accuracy": few_label_probe(train_h, train_y, test_h, test_y, subsets)
        for prefix, (train_h, test_h) in features.items()
    }


def evaluate(
    model: ContrastiveModel,
    augmentation: Any,
    data: Dataset,
    device: torch.device,
    seed: int,
    with_probes: bool = True,
) -> dict[str, Any]:
    """Alignment and uniformity (Wang & Isola 2020) of the projections of two held-out views, effective rank
    of the held-out features, and (``with_probes``) the probes on the encoder's features.

    The views are drawn from a generator seeded with ``seed``, so evaluation never
    touches the training randomness.
    """
    train_x, train_y = data.split("train")
    test_x, test_y = data.split("test")
    views = make_views(augmentation, test_x, 2, torch.Generator().manual_seed(seed))
    z1, z2 = (embed(model, v, device) for v in views)
    test_h = embed(model.encoder, test_x, device)
    record = {
        "alignment": alignment(z1, z2).item(),
        "uniformity": uniformity(torch.cat([z1, z2])).item(),
        "effective_rank": effective_rank(test_h).item(),
    }
    if with_probes:
        record.update(probes(embed(model.encoder, train_x, device), train_y, test_h, test_y))
    return record


def encoded_splits(encoder: torch.nn.Module, data: Dataset, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``encoder``'s features of the training and of the held-out split."""
    return embed(encoder, data.split("train")[0], device), embed(encoder, data.split("test")[0], device)


def baselines(
    random_encoder: torch.nn.Module, data: Dataset, device: torch.device, seed: int
) -> dict[str, Any]:
    """The linear probe (all labels, few labels) on a randomly initialised encoder and on the raw inputs."""
    train_x, train_y = data.split("train")
    test_x, test_y = data.split("test")
    random_h = encoded_splits(random_encoder, data, device)
    raw_h = (train_x.flatten(1), test_x.flatten(1))
    return {
        "random_init_linear_probe_accuracy": probes(random_h[0], train_y, random_h[1], test_y)[
            "linear_probe_accuracy"
        ],
        "raw_input_linear_probe_accuracy": probes(raw_h[0], train_y, raw_h[1], test_y)[
            "linear_probe_accuracy"
        ],
        **few_label_probes({"random_init_": random_h, "raw_input_": raw_h}, data, seed),
    }
