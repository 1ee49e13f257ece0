"""Random horizontal flip with a per-sample coin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from contrastive.augment.base import RandomAugmentation, check_probability, draw_device
from contrastive.hookspecs import Register, hookimpl

__all__ = ["FlipParams", "HorizontalFlip"]


@dataclass(frozen=True)
class FlipParams:
    """Per-sample booleans: ``flip[i]`` mirrors image ``i`` left-right."""

    flip: torch.Tensor


def draw_coins(
    p: float, batch: int, generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """Draw ``batch`` booleans that are True with probability ``p`` (on ``device``)."""
    u = torch.rand(batch, generator=generator, device=draw_device(generator, device))
    coins = u < p
    return coins.to(device) if device is not None else coins


class HorizontalFlip(RandomAugmentation[FlipParams]):
    """Mirror each image left-right with probability ``p`` (SimCLR, Chen et al. 2020, uses p = 0.5)."""

    def __init__(self, p: float = 0.5) -> None:
        """Flip each image with probability ``p``."""
        super().__init__()
        self.p = check_probability("p", p)

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> FlipParams:
        """Draw one coin per sample."""
        return FlipParams(draw_coins(self.p, int(shape[0]), generator, device))

    def _apply(self, x: torch.Tensor, params: FlipParams) -> torch.Tensor:
        """Mirror the selected images."""
        flip = params.flip.to(x.device)
        if not bool(flip.any()):
            return x
        idx = flip.nonzero().squeeze(1)
        return x.index_copy_(0, idx, x.index_select(0, idx).flip(-1))

    def extra_repr(self) -> str:
        """Show ``p``."""
        return f"p={self.p}"


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register ``horizontal_flip``."""
    register("horizontal_flip", HorizontalFlip)
