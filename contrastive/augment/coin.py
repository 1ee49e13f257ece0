"""Augmentations applied to each image with probability ``p``: one coin per sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from contrastive.augment.base import RandomAugmentation, check_probability, draw_device

__all__ = ["CoinAugmentation", "CoinParams", "draw_coins"]


def draw_coins(
    p: float, batch: int, generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """Draw ``batch`` booleans that are True with probability ``p`` (on ``device``)."""
    u = torch.rand(batch, generator=generator, device=draw_device(generator, device))
    coins = u < p
    return coins.to(device) if device is not None else coins


@dataclass(frozen=True)
class CoinParams:
    """Per-sample booleans: ``apply[i]`` says whether image ``i`` is transformed."""

    apply: torch.Tensor


class CoinAugmentation(RandomAugmentation[CoinParams]):
    """An augmentation applied to each image with probability ``p``; subclasses define ``_transform``."""

    def __init__(self, p: float) -> None:
        """Apply to each image with probability ``p``."""
        super().__init__()
        self.p = check_probability("p", p)

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> CoinParams:
        """Draw one coin per sample."""
        return CoinParams(draw_coins(self.p, int(shape[0]), generator, device))

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """The transformation applied to the selected images."""
        raise NotImplementedError

    def _apply(self, x: torch.Tensor, params: CoinParams) -> torch.Tensor:
        """Transform the selected images in place."""
        selected = params.apply.to(x.device)
        if not bool(selected.any()):
            return x
        idx = selected.nonzero().squeeze(1)
        return x.index_copy_(0, idx, self._transform(x.index_select(0, idx)))

    def extra_repr(self) -> str:
        """Show ``p``."""
        return f"p={self.p}"
