"""Random coordinate masking of vectors, with the complementary two-view scheme of Ji et al. (2021)."""

from __future__ import annotations

import torch

from contrastive.augment.base import Augmentation, GeneratorLike, as_generator, check_probability, draw_device
from contrastive.hookspecs import Register, hookimpl

__all__ = ["RandomMask"]


class RandomMask(Augmentation):
    r"""Random masking of vectors: :math:`x \mapsto A x`, :math:`A = \operatorname{diag}(a_1, \dots, a_d)`.

    Each coordinate is kept (:math:`a_k = 1`) with probability ``mask_prob``,
    independently per sample and coordinate, and zeroed otherwise. With
    ``complementary=True`` (the default, the augmentation analysed by Ji, Deng,
    Nakada, Zou and Zhang, arXiv:2110.02473), :meth:`views` returns the coupled
    pair :math:`(A x, (I - A) x)`: every coordinate appears in exactly one view,
    so the second view keeps each coordinate with probability ``1 - mask_prob``.
    With ``complementary=False`` every view draws its own independent mask.

    Input: a batch of vectors (B, d). ``aug(x)`` returns one view :math:`A x`.
    """

    def __init__(self, mask_prob: float = 0.5, complementary: bool = True) -> None:
        """Store the keep probability ``mask_prob`` in [0, 1] and whether two views are complementary."""
        super().__init__()
        self.mask_prob = check_probability("mask_prob", mask_prob)
        if not isinstance(complementary, bool):
            raise ValueError(f"complementary must be a bool, got {complementary!r}")
        self.complementary = complementary

    def mask(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        """Draw a 0/1 keep-mask with the shape, dtype and device of the (B, d) batch ``x``."""
        _check_vectors(x)
        g = as_generator(generator, x.device)
        u = torch.rand(x.shape, generator=g, device=draw_device(g, x.device))
        return (u < self.mask_prob).to(device=x.device, dtype=x.dtype)

    def forward(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        """Return one masked view ``A x`` of the (B, d) batch ``x``."""
        return x * self.mask(x, generator)

    def views(self, x: torch.Tensor, n: int = 2, generator: GeneratorLike = None) -> list[torch.Tensor]:
        """Return ``n`` masked views; if ``complementary`` (then ``n`` must be 2), ``[A x, (I - A) x]``."""
        if not self.complementary:
            return super().views(x, n=n, generator=generator)
        if isinstance(n, bool) or not isinstance(n, int) or n != 2:
            raise ValueError(
                f"complementary masks couple exactly two views, got n={n!r}; use n=2 or complementary=False"
            )
        a = self.mask(x, generator)
        return [x * a, x * (1 - a)]

    def extra_repr(self) -> str:
        """Show the options in the module's repr."""
        return f"mask_prob={self.mask_prob}, complementary={self.complementary}"


def _check_vectors(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"random_mask takes a batch of vectors x of shape (B, d), got {shape}")
    if not (x.is_floating_point() or x.is_complex()):
        raise ValueError(f"random_mask needs a floating-point x, got dtype {x.dtype}")


@hookimpl
def register_augmentations(register: Register) -> None:
    """Register the ``random_mask`` augmentation."""
    register("random_mask", RandomMask)
