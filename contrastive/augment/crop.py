"""Random resized crop: one batched bilinear resampling for the whole batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from contrastive.augment.base import RandomAugmentation, draw_device
from contrastive.hookspecs import Register, hookimpl

__all__ = ["CropParams", "RandomResizedCrop"]

#: attempts at drawing a crop that fits before falling back to a central crop
ATTEMPTS = 10


@dataclass(frozen=True)
class CropParams:
    """Per-sample crop boxes in pixels: rows ``top:top+height``, columns ``left:left+width``."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


def _pair(name: str, value: float | Sequence[float], positive: bool = True) -> tuple[float, float]:
    """Check ``value`` is an increasing pair of (positive) numbers and return it as floats."""
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high or (positive and low <= 0):
        raise ValueError(f"{name} must be a pair 0 < min <= max, got {value!r}")
    return low, high


def check_size(name: str, size: int | Sequence[int]) -> tuple[int, int]:
    """Return ``size`` (an int or a pair (height, width)) as a pair of positive ints."""
    try:
        pair = (size, size) if isinstance(size, int) else tuple(size)
    except TypeError:
        pair = (size,)
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in pair):
        raise ValueError(
            f"{name} must be a positive int or a pair of positive ints (height, width), got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def _source_coords(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """Normalised grid coordinates (align_corners=False) resampling ``length`` pixels from ``start``.

    Pixel centre ``o`` of the output maps to ``start + (o + 0.5) * length / out_size - 0.5``,
    clamped to the crop, as when the crop is cut out and then resized bilinearly.
    """
    o = torch.arange(out_size, device=start.device, dtype=torch.float64) + 0.5
    start = start.to(torch.float64)[:, None]
    length = length.to(torch.float64)[:, None]
    p = start + o * (length / out_size) - 0.5
    p = torch.minimum(torch.maximum(p, start), start + length - 1)
    return (2 * p + 1) / in_size - 1


class RandomResizedCrop(RandomAugmentation[CropParams]):
    """Crop a random box of each image and resize it bilinearly to ``size``.

    The box has area ``s * H * W`` with ``s ~ U(scale)`` and aspect ratio ``r`` with
    ``log r ~ U(log ratio)``; up to 10 draws are tried until one fits, else the
    largest central box within ``ratio`` is used (as in torchvision's ``RandomResizedCrop``).
    SimCLR (Chen et al. 2020) uses ``scale=(0.08, 1)``, ``ratio=(3/4, 4/3)``.
    The whole batch is resampled in one ``grid_sample`` call (bilinear, sample
    coordinates clamped to the box, no antialiasing). A box that is the whole image at
    its own size returns the image exactly.
    """

    fresh_output = True

    def __init__(
        self,
        size: int | Sequence[int] = 224,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
    ) -> None:
        """Crop area fraction in ``scale``, aspect ratio (width/height) in ``ratio``; resize to ``size``."""
        super().__init__()
        self.size = check_size("size", size)
        self.scale = _pair("scale", scale)
        self.ratio = _pair("ratio", ratio)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """(B, C, size[0], size[1])."""
        return (int(shape[0]), int(shape[1]), *self.size)

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> CropParams:
        """Draw one crop box per sample for images of ``shape`` (B, C, H, W)."""
        b, height, width = int(shape[0]), int(shape[-2]), int(shape[-1])
        dev = draw_device(generator, device)
        draws = torch.rand(4, b, ATTEMPTS, generator=generator, device=dev, dtype=torch.float64)
        area = height * width * (draws[0] * (self.scale[1] - self.scale[0]) + self.scale[0])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(draws[1] * (log_hi - log_lo) + log_lo)
        w = torch.round(torch.sqrt(area * aspect))
        h = torch.round(torch.sqrt(area / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
        found = fits.any(dim=1)
        # fallback: the largest central box whose aspect ratio lies within `ratio`
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, max(1, min(height, int(round(width / self.ratio[0]))))
        elif in_ratio > self.ratio[1]:
            fw, fh = max(1, min(width, int(round(height * self.ratio[1])))), height
        else:
            fw, fh = width, height
        w = torch.where(found, w.gather(1, first).squeeze(1), float(fw))
        h = torch.where(found, h.gather(1, first).squeeze(1), float(fh))
        u_top, u_left = draws[2, :, 0], draws[3, :, 0]
        top = torch.where(found, torch.floor(u_top * (height - h + 1)), torch.floor((height - h) / 2))
        left = torch.where(found, torch.floor(u_left * (width - w + 1)), torch.floor((width - w) / 2))
        top = torch.minimum(top, height - h)
        left = torch.minimum(left, width - w)
        out = device if device is not None else dev
        return CropParams(*(t.to(device=out, dtype=torch.long) for t in (top, left, h, w)))

    def _apply(self, x: torch.Tensor, params: CropParams) -> torch.Tensor:
        """Cut out each box and resize it to ``size``."""
        return self.resample(x, params)

    def resample(self, x: torch.Tensor, params: CropParams, flip: torch.Tensor | None = None) -> torch.Tensor:
        """Resample the boxes of ``params`` from the float batch ``x``, mirrored left-right where ``flip``."""
        b, _, height, width = x.shape
        out_h, out_w = self.size
        if b == 0:
            return x.new_empty(self.output_shape(x.shape))
        dev = x.device
        top, left = params.top.to(dev), params.left.to(dev)
        h, w = params.height.to(dev), params.width.to(dev)
        gx = _source_coords(left, w, width, out_w)
        gy = _source_coords(top, h, height, out_h)
        if flip is not None:
            flip = flip.to(dev)
            gx = torch.where(flip[:, None], gx.flip(1), gx)
        gx, gy = gx.to(x.dtype), gy.to(x.dtype)
        grid = torch.stack(
            [gx[:, None, :].expand(b, out_h, out_w), gy[:, :, None].expand(b, out_h, out_w)], dim=-1
        )
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if (out_h, out_w) == (height, width):
            # whole-image boxes at their own size are returned exactly
            whole = (top == 0) & (left == 0) & (h == height) & (w == width)
            if bool(whole.any()):
                idx = whole.nonzero().squeeze(1)
                src = x.index_select(0, idx)
                if flip is not None:
                    src = torch.where(flip.index_select(0, idx)[:, None, None, None], src.flip(-1), src)
                out.index_copy_(0, idx, src)
        return out

    def extra_repr(self) -> str:
        """Show the size, scale and ratio."""
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}"


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register ``random_resized_crop``."""
    register("random_resized_crop", RandomResizedCrop)
