"""Random horizontal flip with a per-sample coin."""

from __future__ import annotations

import torch

from contrastive.augment.coin import CoinAugmentation
from contrastive.hookspecs import Register, hookimpl

__all__ = ["HorizontalFlip"]


class HorizontalFlip(CoinAugmentation):
    """Mirror each image left-right with probability ``p`` (SimCLR, Chen et al. 2020, uses p = 0.5)."""

    def __init__(self, p: float = 0.5) -> None:
        """Flip each image with probability ``p``."""
        super().__init__(p)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """Mirror along the width."""
        return x.flip(-1)


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register ``horizontal_flip``."""
    register("horizontal_flip", HorizontalFlip)
