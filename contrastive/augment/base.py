"""The base class every batched augmentation derives from."""

from __future__ import annotations

import torch

GeneratorLike = torch.Generator | int | None


def as_generator(generator: GeneratorLike, device: torch.device | str = "cpu") -> torch.Generator | None:
    """Turn a seed into a ``torch.Generator`` on ``device``; pass generators and ``None`` through."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
    g = torch.Generator(device=device)
    g.manual_seed(generator)
    return g


class Augmentation(torch.nn.Module):
    """A batched augmentation: ``aug(x, generator=None)`` returns one augmented view of ``x``.

    Randomness is drawn per sample from ``generator`` (a ``torch.Generator`` or an
    int seed) when given, else from torch's global RNG.
    """

    def forward(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:  # noqa: D401
        """Return one augmented view of the batch ``x``."""
        raise NotImplementedError

    def views(self, x: torch.Tensor, n: int = 2, generator: GeneratorLike = None) -> list[torch.Tensor]:
        """Return ``n`` independently augmented views of ``x``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        g = as_generator(generator, x.device)
        return [self(x, generator=g) for _ in range(n)]
