"""Hypothesis strategies for contrastive tests: embeddings, views, labels, temperatures, dtypes.

The same builders the library's own tests use. Tensors are drawn as
(shape, seed, scale) and built with a seeded torch generator, so examples
shrink to small shapes and simple seeds and every example is reproducible::

    from hypothesis import given
    from contrastive.testing import strategies as cst

    @given(cst.labelled_views(min_views=2, max_views=2))
    def test_my_loss_is_finite(views_and_labels):
        views, labels = views_and_labels
        assert my_loss(*views, labels=labels).isfinite()
"""

from __future__ import annotations

import math

import torch

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    from contrastive.testing._requirements import missing_kit_error

    raise missing_kit_error(exc) from exc

#: Floating dtypes the engine accepts, widest first.
FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.bfloat16, torch.float16)

__all__ = [
    "FLOAT_DTYPES",
    "dtypes",
    "embeddings",
    "gaussian",
    "labelled_views",
    "labels",
    "seeds",
    "temperatures",
    "views",
]


def seeds() -> st.SearchStrategy[int]:
    """Seeds for torch generators."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def temperatures(min_value: float = 1e-3, max_value: float = 10.0) -> st.SearchStrategy[float]:
    """Temperatures spread log-uniformly over ``[min_value, max_value]``."""
    if not 0 < min_value <= max_value:
        raise ValueError(f"need 0 < min_value <= max_value, got {min_value!r} and {max_value!r}")
    return st.floats(math.log10(min_value), math.log10(max_value)).map(lambda e: float(10.0**e))


def dtypes(choices: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> st.SearchStrategy[torch.dtype]:
    """Floating dtypes, shrinking towards the first of ``choices``."""
    return st.sampled_from(choices)


def gaussian(
    shape: tuple[int, ...], seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A seeded standard-normal tensor times ``scale``, built in float64 then cast to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


@st.composite
def embeddings(
    draw: st.DrawFn,
    min_rows: int = 2,
    max_rows: int = 10,
    max_dim: int = 6,
    dtype: torch.dtype = torch.float64,
    scale: float | None = None,
) -> torch.Tensor:
    """One ``(N, D)`` embedding matrix with a drawn scale (unless ``scale`` is given)."""
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, max_dim))
    s = draw(st.floats(0.1, 10.0)) if scale is None else scale
    return gaussian((n, d), draw(seeds()), s, dtype)


@st.composite
def labels(draw: st.DrawFn, n: int) -> torch.Tensor:
    """Integer labels of length ``n``: unique, one class, a few classes, or shuffled pairs."""
    pattern = draw(st.sampled_from(["unique", "single", "few", "pairs"]))
    if pattern == "unique":
        out = torch.arange(n) * 3 - 5
    elif pattern == "single":
        out = torch.full((n,), 7)
    elif pattern == "few":
        k = draw(st.integers(1, max(1, n // 2)))
        out = gaussian((n,), draw(seeds())).abs().mul(10 * k).long() % k
    else:
        out = torch.arange(n) // 2
        out = out[torch.randperm(n, generator=torch.Generator().manual_seed(draw(seeds())))]
    return out.long()


@st.composite
def views(
    draw: st.DrawFn,
    min_views: int = 2,
    max_views: int = 4,
    min_batch: int = 2,
    max_batch: int = 10,
    max_dim: int = 6,
    dtype: torch.dtype = torch.float64,
    scale: float | None = None,
) -> list[torch.Tensor]:
    """A list of views, each ``(B, D)``: seeded Gaussians with a drawn scale (unless ``scale`` is given)."""
    v = draw(st.integers(min_views, max_views))
    b = draw(st.integers(min_batch, max_batch))
    d = draw(st.integers(1, max_dim))
    s = draw(st.floats(0.1, 10.0)) if scale is None else scale
    seed = draw(seeds())
    return [gaussian((b, d), seed + i, s, dtype) for i in range(v)]


@st.composite
def labelled_views(draw: st.DrawFn, **kwargs: object) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Views (as :func:`views`, same keyword arguments) plus labels for their batch."""
    vs = draw(views(**kwargs))  # type: ignore[arg-type]
    return vs, draw(labels(vs[0].shape[0]))
