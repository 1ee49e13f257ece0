"""Hypothesis strategies for image batches and augmentation settings (used by tests/test_augment*.py)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

FLOAT_DTYPES = (torch.float32, torch.float64)


@st.composite
def image_batches(
    draw: st.DrawFn,
    channels: tuple[int, ...] = (1, 3),
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.uint8),
    min_side: int = 1,
    max_side: int = 20,
    max_batch: int = 4,
) -> torch.Tensor:
    """A (B, C, H, W) batch of random pixels in [0, 1] (uint8: [0, 255]), with a few exact 0s and 1s."""
    b = draw(st.integers(1, max_batch))
    c = draw(st.sampled_from(channels))
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    dtype = draw(st.sampled_from(dtypes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    x = torch.where(x < 0.05, 0.0, torch.where(x > 0.95, 1.0, x))
    if dtype == torch.uint8:
        return (x * 255).round().to(torch.uint8)
    return x.to(dtype)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator``."""
    return st.integers(0, 2**32 - 1)


def probabilities() -> st.SearchStrategy[float]:
    """Probabilities in [0, 1], the ends included."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def strengths(max_value: float = 1.0) -> st.SearchStrategy[float]:
    """Jitter strengths in [0, max_value]."""
    return st.one_of(st.just(0.0), st.floats(0.0, max_value))


@st.composite
def crop_ranges(draw: st.DrawFn) -> tuple[tuple[float, float], tuple[float, float]]:
    """A (scale, ratio) pair of increasing positive ranges."""
    s0 = draw(st.floats(0.01, 1.0))
    s1 = draw(st.floats(s0, 1.0))
    r0 = draw(st.floats(0.2, 3.0))
    r1 = draw(st.floats(r0, 5.0))
    return (s0, s1), (r0, r1)
