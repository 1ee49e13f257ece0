"""Colour jitter: brightness, contrast, saturation and hue with per-sample factors and order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from contrastive.augment.base import RandomAugmentation, check_probability, draw_device
from contrastive.augment.color import GRAY_WEIGHTS, hue_matrix, shift_hue_hsv
from contrastive.hookspecs import Register, hookimpl

__all__ = ["ColorJitter", "JitterParams"]

#: operation ids used in ``JitterParams.order``
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
_NAMES = ("brightness", "contrast", "saturation", "hue")
_IDENTITY = (1.0, 1.0, 1.0, 0.0)
#: elements per chunk of the batch processed while it stays in cache (CPU)
_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class JitterParams:
    """Per-sample jitter parameters.

    ``brightness``, ``contrast``, ``saturation`` are multiplicative factors, ``hue`` a shift
    in turns; ``order[i]`` lists the operation ids (0 brightness, 1 contrast, 2 saturation,
    3 hue) applied to image ``i`` in turn; ``applied[i]`` is False for images left unchanged.
    """

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    order: torch.Tensor
    applied: torch.Tensor


def _factor_range(name: str, value: float | Sequence[float]) -> tuple[float, float]:
    """Turn ``value`` (a strength v >= 0 or a pair) into a factor range: ``[max(0, 1 - v), 1 + v]``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value!r}")
        return max(0.0, 1.0 - value), 1.0 + value
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a non-negative number or a pair (min, max), got {value!r}"
        ) from None
    if not 0 <= low <= high:
        raise ValueError(f"{name} must be a pair 0 <= min <= max, got {value!r}")
    return low, high


def _hue_range(value: float | Sequence[float]) -> tuple[float, float]:
    """Turn ``hue`` (h in [0, 0.5] or a pair within [-0.5, 0.5]) into a shift range ``[-h, h]``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 <= value <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {value!r}")
        return -float(value), float(value)
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"hue must be a number in [0, 0.5] or a pair (min, max), got {value!r}") from None
    if not -0.5 <= low <= high <= 0.5:
        raise ValueError(f"hue must be a pair -0.5 <= min <= max <= 0.5, got {value!r}")
    return low, high


class ColorJitter(RandomAugmentation[JitterParams]):
    """Randomly change brightness, contrast, saturation and hue, in a random order per image.

    With probability ``p`` an image gets, each clamped to [0, 1] after it (torchvision's definitions):
    brightness ``f x``; contrast ``f x + (1 - f) mean(gray(x))``; saturation
    ``f x + (1 - f) gray(x)`` with ``gray = 0.299 R + 0.587 G + 0.114 B``; hue: a rotation
    of the chroma plane of YIQ by ``2 pi h`` (``hue_space="yiq"``, the default: an approximation
    of the HSV hue shift that keeps luma and is linear in RGB, so every step is one 3x3 matrix),
    or torchvision's HSV hue shift (``hue_space="hsv"``, slower). Factors are uniform on
    ``[max(0, 1 - v), 1 + v]`` for a strength ``v`` and ``h ~ U[-hue, hue]``. The order of
    the enabled operations is drawn per image (torchvision draws one order per call).
    SimCLR (Chen et al. 2020) uses strength s: ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s, p=0.8)``.
    On one-channel images saturation and hue do nothing.
    """

    channels = (1, 3)

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.0,
        contrast: float | Sequence[float] = 0.0,
        saturation: float | Sequence[float] = 0.0,
        hue: float | Sequence[float] = 0.0,
        p: float = 1.0,
        hue_space: str = "yiq",
    ) -> None:
        """Jitter with these strengths (or ranges) with probability ``p``; hue in ``"yiq"`` or ``"hsv"``."""
        super().__init__()
        self.ranges = (
            _factor_range("brightness", brightness),
            _factor_range("contrast", contrast),
            _factor_range("saturation", saturation),
            _hue_range(hue),
        )
        self.p = check_probability("p", p)
        if hue_space not in ("yiq", "hsv"):
            raise ValueError(f"hue_space must be 'yiq' or 'hsv', got {hue_space!r}")
        self.hue_space = hue_space
        self.enabled = tuple(i for i, r in enumerate(self.ranges) if r != (_IDENTITY[i], _IDENTITY[i]))

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> JitterParams:
        """Draw factors, an order of the enabled operations and a coin per sample."""
        b, n = int(shape[0]), len(self.enabled)
        dev = draw_device(generator, device)
        u = torch.rand(b, 5 + n, generator=generator, device=dev)
        lo = torch.tensor([r[0] for r in self.ranges], device=dev)
        hi = torch.tensor([r[1] for r in self.ranges], device=dev)
        factors = u[:, :4] * (hi - lo) + lo
        enabled = torch.tensor(self.enabled, dtype=torch.long, device=dev)
        order = (
            enabled[u[:, 4 : 4 + n].argsort(dim=1)] if n else torch.zeros(b, 0, dtype=torch.long, device=dev)
        )
        applied = u[:, -1] < self.p
        out = device if device is not None else dev
        f = factors.to(out)
        return JitterParams(f[:, 0], f[:, 1], f[:, 2], f[:, 3], order.to(out), applied.to(out))

    def _step_matrices(
        self, params: JitterParams, channels: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per step, each sample's colour matrix (B, C, C), contrast factor and HSV hue shift (B,).

        The contrast factor is 1 and the HSV shift 0 where a sample does something else.
        """
        applied = params.applied.to(device)
        order = params.order.to(device)
        b = applied.shape[0]
        f = {
            i: torch.where(
                applied, getattr(params, name).to(device=device, dtype=torch.float64), _IDENTITY[i]
            )
            for i, name in enumerate(_NAMES)
        }
        eye = torch.eye(channels, dtype=torch.float64, device=device)
        if channels == 3:
            gray = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64, device=device)
            ones_gray = torch.ones(3, 1, dtype=torch.float64, device=device) * gray[None, :]
            s = f[SATURATION][:, None, None]
            sat = s * eye + (1 - s) * ones_gray
            hue = hue_matrix(f[HUE], torch.float64) if self.hue_space == "yiq" else eye.expand(b, 3, 3)
        else:
            sat = hue = eye.expand(b, 1, 1)
        scale = {BRIGHTNESS: f[BRIGHTNESS][:, None, None] * eye, CONTRAST: f[CONTRAST][:, None, None] * eye}
        mats, contrast, hsv = [], [], []
        for t in range(order.shape[1]):
            op = order[:, t][:, None, None]
            m = torch.where(
                op == BRIGHTNESS, scale[BRIGHTNESS], torch.where(op == CONTRAST, scale[CONTRAST], eye)
            )
            m = torch.where(op == SATURATION, sat, torch.where(op == HUE, hue, m))
            mats.append(m.to(dtype))
            contrast.append(torch.where(order[:, t] == CONTRAST, f[CONTRAST], 1.0).to(dtype))
            shift = f[HUE] if self.hue_space == "hsv" and channels == 3 else torch.zeros_like(f[HUE])
            hsv.append(torch.where(order[:, t] == HUE, shift, 0.0).to(dtype))
        return mats, contrast, hsv

    def _apply(self, x: torch.Tensor, params: JitterParams) -> torch.Tensor:
        """Apply the per-sample colour steps, one 3x3 (or 1x1) matrix and a clamp per step."""
        b, c, h, w = x.shape
        if b == 0 or params.order.shape[1] == 0:
            return x
        x = x.contiguous()
        mats, contrast, hsv = self._step_matrices(params, c, x.dtype, x.device)
        gray = torch.tensor(GRAY_WEIGHTS if c == 3 else (1.0,), dtype=x.dtype, device=x.device)
        use_contrast = [bool((k != 1).any()) for k in contrast]
        use_hsv = [bool((s != 0).any()) for s in hsv]
        chunk = b if x.device.type != "cpu" else max(1, _CHUNK_ELEMENTS // (c * h * w))
        flat = x.view(b, c, h * w)
        work = torch.empty_like(flat[:chunk])
        for start in range(0, b, chunk):
            stop = min(b, start + chunk)
            src, dst = flat[start:stop], work[: stop - start]
            for m, k, use, s, shift in zip(mats, contrast, use_contrast, hsv, use_hsv, strict=True):
                m = m[start:stop]
                if use:
                    k = k[start:stop]
                    mean = src.mean(dim=2) @ gray  # mean of the grayscale image
                    bias = ((1 - k) * mean)[:, None, None].expand(-1, c, 1)
                    torch.baddbmm(bias, m, src, out=dst)
                else:
                    torch.bmm(m, src, out=dst)
                dst.clamp_(0, 1)
                src, dst = dst, src
                if shift:
                    s = s[start:stop]
                    idx = (s != 0).nonzero().squeeze(1)
                    if idx.numel():
                        sub = shift_hue_hsv(src.index_select(0, idx), s.index_select(0, idx))
                        src.index_copy_(0, idx, sub)
            if src.data_ptr() != flat[start].data_ptr():
                flat[start:stop].copy_(src)
        return x

    def extra_repr(self) -> str:
        """Show the ranges and ``p``."""
        parts = [f"{name}={r}" for name, r in zip(_NAMES, self.ranges, strict=True)]
        return ", ".join(parts) + f", p={self.p}, hue_space={self.hue_space!r}"


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register ``color_jitter``."""
    register("color_jitter", ColorJitter)
