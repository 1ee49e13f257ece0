"""The trainer's own augmentations: a small random affine warp, the default for small images such as digits.

Digits are not mirror-symmetric (a flipped 2 is no 2), so SimCLR's horizontal flip teaches the
encoder an invariance that the labels do not have; a few degrees of rotation, a pixel of shift and
a little zoom are the nuisances handwriting actually has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from contrastive.augment.base import RandomAugmentation, draw_device

__all__ = ["TRAINER_AUGMENTATIONS", "AffineParams", "RandomAffine"]


class AffineParams(NamedTuple):
    """Per-sample rotation (radians), scale and translation (fractions of the image side)."""

    angle: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor  # (B, 2): x, y


def _range(name: str, value: Sequence[float], low: float) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not low <= pair[0] <= pair[1] or not all(math.isfinite(v) for v in pair):
        raise ValueError(f"{name} must be [low, high] with {low} <= low <= high, got {list(value)!r}")
    return pair[0], pair[1]


class RandomAffine(RandomAugmentation[AffineParams]):
    """Rotate by ``U(-degrees, degrees)``, zoom by ``U(scale)`` and shift by ``U(-translate, translate)``.

    The warp ``x' = s R(θ) x + t`` (coordinates in [-1, 1], ``t`` a fraction of the side times 2)
    is resampled bilinearly in one ``grid_sample`` call; pixels from outside the image are 0
    (the digits' background). The image size is unchanged.
    """

    fresh_output = True

    def __init__(
        self,
        degrees: float = 15.0,
        translate: float = 0.125,
        scale: Sequence[float] = (0.9, 1.1),
    ) -> None:
        """Rotation up to ``degrees``, shift up to ``translate`` of the side, zoom within ``scale``."""
        super().__init__()
        if isinstance(degrees, bool) or not isinstance(degrees, (int, float)) or not 0 <= degrees <= 180:
            raise ValueError(f"degrees must be a number in [0, 180], got {degrees!r}")
        if isinstance(translate, bool) or not isinstance(translate, (int, float)) or not 0 <= translate <= 1:
            raise ValueError(f"translate must be a fraction in [0, 1], got {translate!r}")
        self.degrees, self.translate = float(degrees), float(translate)
        self.scale = _range("scale", scale, 1e-3)

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> AffineParams:
        """Draw one rotation, zoom and shift per sample."""
        b = int(shape[0])
        u = torch.rand(4, b, generator=generator, device=draw_device(generator, device))
        angle = (2 * u[0] - 1) * math.radians(self.degrees)
        scale = self.scale[0] + u[1] * (self.scale[1] - self.scale[0])
        shift = (2 * u[2:].T - 1) * self.translate
        out = device if device is not None else u.device
        return AffineParams(angle.to(out), scale.to(out), shift.to(out))

    def _apply(self, x: torch.Tensor, params: AffineParams) -> torch.Tensor:
        """Warp each image of the float batch ``x``."""
        if x.shape[0] == 0:
            return x
        angle, scale, shift = (p.to(device=x.device, dtype=x.dtype) for p in params)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # grid_sample maps output coordinates to input ones: the inverse warp
        theta = torch.stack(
            [torch.stack([cos, sin, -2 * shift[:, 0]], 1), torch.stack([-sin, cos, -2 * shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def extra_repr(self) -> str:
        """Show the ranges."""
        return f"degrees={self.degrees}, translate={self.translate}, scale={self.scale}"


#: augmentations the trainer provides besides the registered ones (``--augment NAME``)
TRAINER_AUGMENTATIONS: dict[str, Any] = {"affine": RandomAffine}
