"""The base class every batched augmentation derives from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

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


# --- Helpers shared by the image augmentations ------------------------------------------------


def check_probability(name: str, p: float) -> float:
    """Return ``p`` as a float if it lies in [0, 1], else raise ``ValueError`` naming ``name``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def check_images(x: torch.Tensor, channels: tuple[int, ...] | None = None, name: str = "x") -> None:
    """Check ``x`` is a (B, C, H, W) float or uint8 batch, with C in ``channels`` when given."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if not (x.dtype.is_floating_point or x.dtype == torch.uint8):
        raise ValueError(f"{name} must be a float tensor in [0, 1] or uint8, got dtype {x.dtype}")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, channels))} channels, got shape {tuple(x.shape)}"
        )
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have positive height and width, got shape {tuple(x.shape)}")


def to_float_images(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Return ``x`` as float in [0, 1] (uint8 / 255; half precisions as float32) and whether it was copied."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0), True
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.to(torch.float32), True
    return x, False


def from_float_images(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Convert a float result back to ``dtype`` (uint8: scaled by 255 and rounded)."""
    if dtype == torch.uint8:
        return y.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return y if y.dtype == dtype else y.to(dtype)


def draw_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Where random draws happen: the generator's device if given, else ``device`` (CPU if ``None``)."""
    if generator is not None:
        return generator.device
    return torch.device("cpu" if device is None else device)


P = TypeVar("P")


class RandomAugmentation(Augmentation, Generic[P]):
    """An augmentation split into a per-sample parameter draw and a deterministic application.

    ``forward(x, generator)`` is ``apply(x, sample_params(x.shape, generator, x.device))``;
    ``sample_params`` takes a ``torch.Generator`` (or ``None``: the global RNG) and draws on
    its device. Input is a (B, C, H, W) batch, float in [0, 1] or uint8 in [0, 255]; the
    output has the input's dtype: uint8 is augmented as float32 ``x / 255`` and rounded
    back, float16/bfloat16 are computed in float32. The input is never modified.
    Subclasses implement :meth:`sample_params` and :meth:`_apply`; ``_apply`` receives a
    float tensor in [0, 1] that it may overwrite.
    """

    #: channel counts the augmentation accepts (``None``: any)
    channels: tuple[int, ...] | None = None
    #: whether ``_apply`` always returns a freshly allocated tensor (never its input)
    fresh_output: bool = False

    def sample_params(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> P:
        """Draw the per-sample parameters for a batch of ``shape`` (B, C, H, W)."""
        raise NotImplementedError

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of the output for an input of ``shape``."""
        return tuple(int(s) for s in shape)

    def _apply(self, x: torch.Tensor, params: P) -> torch.Tensor:
        """Apply ``params`` to the float batch ``x`` (which may be overwritten)."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: P) -> torch.Tensor:
        """Apply given parameters to ``x`` without modifying it; the result has ``x``'s dtype."""
        check_images(x, self.channels)
        work, copied = to_float_images(x)
        if not copied and not self.fresh_output:
            work = work.clone()
        return from_float_images(self._apply(work, params), x.dtype)

    def forward(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        """Return one augmented view of the batch ``x`` with per-sample random parameters."""
        check_images(x, self.channels)
        params = self.sample_params(x.shape, as_generator(generator, x.device), x.device)
        return self.apply(x, params)
