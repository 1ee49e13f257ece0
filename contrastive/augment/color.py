"""Colour-space constants and the per-pixel colour augmentations: random grayscale and solarize."""

from __future__ import annotations

import math

import torch

from contrastive.augment.coin import CoinAugmentation
from contrastive.hookspecs import Register, hookimpl

__all__ = [
    "GRAY_WEIGHTS",
    "RandomGrayscale",
    "Solarize",
    "grayscale",
    "hue_matrix",
    "shift_hue_hsv",
]

#: luma weights of ITU-R BT.601 (the Y of YIQ), used for grayscale, contrast and saturation
GRAY_WEIGHTS = (0.299, 0.587, 0.114)

#: RGB -> YIQ (NTSC) matrix
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of a (B, 3, H, W) batch as (B, 1, H, W); 1 channel: as is."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device)
    b, _, h, width = x.shape
    return torch.matmul(w, x.reshape(b, 3, h * width)).view(b, 1, h, width)


def hue_matrix(hue: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample 3x3 RGB matrices rotating chroma in the YIQ plane by ``hue`` turns (luma is kept).

    ``hue`` in [-0.5, 0.5] is a fraction of the colour wheel; positive values move red
    towards yellow and green, like a positive HSV hue shift. A zero shift gives the identity exactly.
    """
    t_cpu = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    t, t_inv = t_cpu.to(hue.device), torch.linalg.inv(t_cpu).to(hue.device)
    angle = -2 * math.pi * hue.to(torch.float64)
    cos, sin = torch.cos(angle) - 1, torch.sin(angle)
    rot = torch.zeros(hue.shape[0], 3, 3, dtype=torch.float64, device=hue.device)
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    delta = t_inv @ rot @ t
    delta = torch.where((hue == 0)[:, None, None], torch.zeros_like(delta), delta)
    return (torch.eye(3, dtype=torch.float64, device=hue.device) + delta).to(dtype)


def shift_hue_hsv(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift the HSV hue of each RGB image of ``x`` (n, 3, ...) by ``shift[i]`` turns (as torchvision).

    Saturation and value are kept; the result is in [0, 1] for input in [0, 1].
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    sat = chroma / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    hue = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    view = (-1,) + (1,) * (hue.dim() - 1)
    hue = torch.remainder(hue / 6.0 + shift.to(x.dtype).view(view), 1.0)
    out = []
    for n in (5.0, 3.0, 1.0):  # R, G, B of HSV -> RGB: v - v s clamp(min(k, 4 - k), 0, 1)
        k = torch.remainder(n + hue * 6.0, 6.0)
        out.append(maxc - maxc * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1).clamp_(0, 1)


class RandomGrayscale(CoinAugmentation):
    """With probability ``p``, replace each RGB image by its luma ``0.299 R + 0.587 G + 0.114 B``.

    SimCLR (Chen et al. 2020) uses p = 0.2 after colour jitter. One-channel images are left as they are.
    """

    channels = (1, 3)

    def __init__(self, p: float = 0.2) -> None:
        """Convert each image to grayscale with probability ``p``."""
        super().__init__(p)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """Luma repeated on every channel."""
        return grayscale(x).clamp_(0, 1).expand_as(x)


class Solarize(CoinAugmentation):
    """Invert pixels at or above ``threshold`` (``x -> 1 - x``) with probability ``p`` per image.

    Not part of SimCLR (Chen et al. 2020); BYOL (Grill et al. 2020) adds it with
    threshold 0.5 and p = 0.2 on one of the two views.
    """

    def __init__(self, threshold: float = 0.5, p: float = 0.2) -> None:
        """Solarize each image with probability ``p`` above ``threshold`` in [0, 1]."""
        super().__init__(p)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """``where(x >= threshold, 1 - x, x)``."""
        return torch.where(x >= self.threshold, 1 - x, x)

    def extra_repr(self) -> str:
        """Show the threshold and ``p``."""
        return f"threshold={self.threshold}, p={self.p}"


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register ``random_grayscale`` and ``solarize``."""
    register("random_grayscale", RandomGrayscale)
    register("solarize", Solarize)
