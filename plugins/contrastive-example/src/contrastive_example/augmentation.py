"""Additive Gaussian noise: a one-line augmentation for feature vectors."""

from __future__ import annotations

import torch

from contrastive.augment.base import Augmentation, GeneratorLike, as_generator


class GaussianNoise(Augmentation):
    r"""Adds independent noise :math:`x + \sigma \varepsilon`, :math:`\varepsilon \sim \mathcal{N}(0, I)`.

    Meant for vectors ``(B, d)`` (tabular or embedding inputs): the output is not
    clipped, so it does not keep images inside [0, 1].

    Args:
        sigma: standard deviation of the noise (0 returns the input unchanged).
    """

    #: tells the conformance kit (and users) what this augmentation expects
    input_kind = "vectors"

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        """Return ``x`` plus Gaussian noise drawn from ``generator``."""
        if not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        g = as_generator(generator, x.device)
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return x + self.sigma * noise
