"""Compositions of augmentations, and the SimCLR recipe."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from contrastive.augment.base import RandomAugmentation
from contrastive.augment.blur import GaussianBlur
from contrastive.augment.color import RandomGrayscale
from contrastive.augment.crop import RandomResizedCrop, check_size
from contrastive.augment.flip import HorizontalFlip
from contrastive.augment.jitter import ColorJitter
from contrastive.hookspecs import Register, hookimpl

__all__ = ["Compose", "SimCLRAugmentation"]

#: image side from which ``SimCLRAugmentation(blur=None)`` blurs (SimCLR leaves blur out on CIFAR-10)
AUTO_BLUR_MIN_SIZE = 64


class Compose(RandomAugmentation[tuple]):
    """Apply augmentations one after another; all parameters are drawn before any is applied.

    The parameters are a tuple with one entry per augmentation, drawn in order from the
    same generator, so a seed fixes the whole composition.
    """

    def __init__(self, augmentations: Iterable[RandomAugmentation]) -> None:
        """Compose ``augmentations`` (instances of ``RandomAugmentation``), applied in the given order."""
        super().__init__()
        augmentations = list(augmentations)
        for i, aug in enumerate(augmentations):
            if not isinstance(aug, RandomAugmentation):
                raise ValueError(f"augmentations[{i}] must be a RandomAugmentation, got {type(aug).__name__}")
        self.augmentations = torch.nn.ModuleList(augmentations)
        channel_sets = [set(a.channels) for a in augmentations if a.channels is not None]
        self.channels = tuple(sorted(set.intersection(*channel_sets))) if channel_sets else None
        self.fresh_output = bool(augmentations) and augmentations[0].fresh_output

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape after every augmentation."""
        out = tuple(int(s) for s in shape)
        for aug in self.augmentations:
            out = aug.output_shape(out)
        return out

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple:
        """Draw the parameters of each augmentation in turn for the shape it will see."""
        params = []
        shape = tuple(int(s) for s in shape)
        for aug in self.augmentations:
            params.append(aug.sample_params(shape, generator, device))
            shape = aug.output_shape(shape)
        return tuple(params)

    def _apply(self, x: torch.Tensor, params: tuple) -> torch.Tensor:
        """Apply each augmentation with its parameters."""
        for aug, p in zip(self.augmentations, params, strict=True):
            x = aug._apply(x, p)
        return x


class SimCLRAugmentation(Compose):
    """The SimCLR augmentation (Chen et al. 2020, appendix A), batched.

    In order: random resized crop to ``size`` (scale (0.08, 1), ratio (3/4, 4/3)),
    horizontal flip (p = 0.5), colour jitter ``(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` with
    p = 0.8, grayscale (p = 0.2) and Gaussian blur (kernel 10 % of the side, sigma in
    [0.1, 2.0], p = 0.5). ``blur=None`` blurs when the output side is at least 64
    pixels, leaving it out for CIFAR-sized images as the paper does. The crop and the
    flip are computed in one resampling. ``hue_space`` picks the hue definition of
    :class:`ColorJitter` (YIQ rotation by default, or torchvision's HSV shift).
    """

    def __init__(
        self,
        size: int | Sequence[int] = 224,
        s: float = 1.0,
        blur: bool | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hue_space: str = "yiq",
    ) -> None:
        """SimCLR's augmentation to ``size`` x ``size``, colour strength ``s``; ``blur=None``: from 64 px."""
        size = check_size("size", size)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0:
            raise ValueError(f"s must be a non-negative number, got {s!r}")
        if blur is None:
            blur = min(size) >= AUTO_BLUR_MIN_SIZE
        augs: list[RandomAugmentation] = [
            RandomResizedCrop(size, scale=scale, ratio=ratio),
            HorizontalFlip(0.5),
            ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), p=0.8, hue_space=hue_space),
            RandomGrayscale(0.2),
        ]
        if blur:
            augs.append(GaussianBlur(None, (0.1, 2.0), p=0.5))
        super().__init__(augs)
        self.size, self.s, self.blur = size, float(s), bool(blur)

    def _apply(self, x: torch.Tensor, params: tuple) -> torch.Tensor:
        """Crop and flip in one resampling, then the colour operations and blur in place."""
        crop, _flip, *rest = self.augmentations
        x = crop.resample(x, params[0], flip=params[1].apply)
        for aug, p in zip(rest, params[2:], strict=True):
            x = aug._apply(x, p)
        return x

    def extra_repr(self) -> str:
        """Show size, strength and blur."""
        return f"size={self.size}, s={self.s}, blur={self.blur}"


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register ``simclr``."""
    register("simclr", SimCLRAugmentation)
