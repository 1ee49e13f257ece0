"""Gaussian blur with a per-sample standard deviation, batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from contrastive.augment.base import RandomAugmentation, check_probability, draw_device
from contrastive.hookspecs import Register, hookimpl

__all__ = ["BlurParams", "GaussianBlur", "blur_matrix", "gaussian_taps", "simclr_kernel_size"]


@dataclass(frozen=True)
class BlurParams:
    """Per-sample standard deviations (pixels) and whether each image is blurred."""

    sigma: torch.Tensor
    applied: torch.Tensor


def simclr_kernel_size(side: int) -> int:
    """SimCLR's kernel size for an image side: 10 % of it, made odd (``2 * (side // 20) + 1``)."""
    return 2 * ((side // 10) // 2) + 1


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror indices into [0, size) without repeating the edge pixel (repeated ``reflect`` padding)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def blur_matrix(
    sigma: torch.Tensor, kernel_size: int, size: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Per-sample (size x size) matrices of a normalised Gaussian of ``kernel_size`` taps, reflect padded.

    ``(K @ v)[i] = sum_d g(d) v[reflect(i + d)]`` with ``g(d) ∝ exp(-d² / (2 sigma²))``
    for ``|d| <= kernel_size // 2``.
    """
    device = sigma.device
    radius = kernel_size // 2
    g = gaussian_taps(sigma, kernel_size)
    rows = torch.arange(size, device=device)
    cols = _reflect(rows[:, None] + torch.arange(-radius, radius + 1, device=device)[None, :], size)
    n = sigma.shape[0]
    k = torch.zeros(n, size, size, dtype=torch.float64, device=device)
    k.scatter_add_(2, cols.expand(n, size, kernel_size), g[:, None, :].expand(n, size, kernel_size))
    return k.to(dtype)


def gaussian_taps(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-sample normalised taps ``g(d) ∝ exp(-d² / (2 sigma²))``, ``|d| <= kernel_size // 2`` (float64)."""
    radius = kernel_size // 2
    d = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float64)
    g = torch.exp(-(d[None, :] ** 2) / (2 * sigma.to(torch.float64)[:, None] ** 2))
    return g / g.sum(dim=1, keepdim=True)


def _blur_conv(xs: torch.Tensor, sigma: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Separable blur as two depthwise convolutions over reflect-padded images (needs radius < side)."""
    n, c, h, w = xs.shape
    y = F.pad(xs.reshape(1, n * c, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    for k, shape in ((kh, (n * c, 1, kh, 1)), (kw, (n * c, 1, 1, kw))):
        if k > 1:
            taps = gaussian_taps(sigma, k).to(xs.dtype).repeat_interleave(c, dim=0)
            y = F.conv2d(y, taps.view(shape), groups=n * c)
    return y.view(n, c, h, w)


def _blur_matmul(xs: torch.Tensor, sigma: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Separable blur as ``K_h @ x @ K_wᵀ`` with dense per-sample matrices (any kernel size)."""
    n, c, h, w = xs.shape
    if kw > 1:
        kx = blur_matrix(sigma, kw, w, xs.dtype)
        xs = torch.bmm(xs.reshape(n, c * h, w), kx.transpose(1, 2)).view(n, c, h, w)
    if kh > 1:
        xs = torch.matmul(blur_matrix(sigma, kh, h, xs.dtype)[:, None], xs)
    return xs


def _odd_size(kernel_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """Check ``kernel_size`` is None or one or two positive odd ints."""
    if kernel_size is None:
        return None
    pair = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(pair) != 2 or any(
        isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in pair
    ):
        raise ValueError(
            f"kernel_size must be None or a positive odd int or pair of them, got {kernel_size!r}"
        )
    return int(pair[0]), int(pair[1])


class GaussianBlur(RandomAugmentation[BlurParams]):
    """Blur each image with probability ``p`` by a Gaussian with ``sigma ~ U(sigma)``.

    The kernel has ``kernel_size`` taps per axis (default: 10 % of that image side, made
    odd, as in SimCLR, Chen et al. 2020, which uses ``sigma`` in [0.1, 2.0] and p = 0.5)
    with reflect padding, applied separably: two depthwise convolutions over the whole
    batch (or, when the kernel radius reaches the image side, two products with per-sample
    banded matrices that reflect repeatedly).
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int] | None = None,
        sigma: Sequence[float] = (0.1, 2.0),
        p: float = 0.5,
    ) -> None:
        """Blur with probability ``p``, sigma drawn from ``sigma``, ``kernel_size`` taps (None: 10 %)."""
        super().__init__()
        self.kernel_size = _odd_size(kernel_size)
        try:
            low, high = (float(s) for s in sigma)
        except (TypeError, ValueError):
            raise ValueError(f"sigma must be a pair (min, max), got {sigma!r}") from None
        if not 0 < low <= high:
            raise ValueError(f"sigma must be a pair 0 < min <= max, got {sigma!r}")
        self.sigma = (low, high)
        self.p = check_probability("p", p)

    def kernel_sizes(self, height: int, width: int) -> tuple[int, int]:
        """Taps along height and width for an image of ``height`` x ``width``."""
        if self.kernel_size is not None:
            return self.kernel_size
        return simclr_kernel_size(height), simclr_kernel_size(width)

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> BlurParams:
        """Draw a standard deviation and a coin per sample."""
        b = int(shape[0])
        u = torch.rand(b, 2, generator=generator, device=draw_device(generator, device))
        sigma = u[:, 0] * (self.sigma[1] - self.sigma[0]) + self.sigma[0]
        applied = u[:, 1] < self.p
        if device is not None:
            sigma, applied = sigma.to(device), applied.to(device)
        return BlurParams(sigma, applied)

    def _apply(self, x: torch.Tensor, params: BlurParams) -> torch.Tensor:
        """Blur the selected images in place."""
        b, c, h, w = x.shape
        kh, kw = self.kernel_sizes(h, w)
        applied = params.applied.to(x.device)
        if b == 0 or (kh == 1 and kw == 1) or not bool(applied.any()):
            return x
        idx = applied.nonzero().squeeze(1)
        sigma = params.sigma.to(x.device).index_select(0, idx)
        xs = x.index_select(0, idx)
        if kh // 2 < h and kw // 2 < w:
            xs = _blur_conv(xs, sigma, kh, kw)
        else:
            xs = _blur_matmul(xs, sigma, kh, kw)
        return x.index_copy_(0, idx, xs.clamp_(0, 1))

    def extra_repr(self) -> str:
        """Show kernel size, sigma range and ``p``."""
        return f"kernel_size={self.kernel_size or '10% of side'}, sigma={self.sigma}, p={self.p}"


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register ``gaussian_blur``."""
    register("gaussian_blur", GaussianBlur)
