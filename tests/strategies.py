"""Hypothesis strategies for contrastive tests: embeddings, views, labels, temperatures, engine problems.

Tensors are drawn as (shape, seed, scale) and built with a seeded torch generator,
so examples shrink well and stay cheap; every test reuses these builders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for torch generators."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def temperatures(min_value: float = 1e-3, max_value: float = 10.0) -> st.SearchStrategy[float]:
    """Temperatures spread log-uniformly over [min_value, max_value]."""
    import math

    return st.floats(math.log10(min_value), math.log10(max_value)).map(lambda e: float(10.0**e))


def dtypes(choices: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> st.SearchStrategy[torch.dtype]:
    """Floating dtypes the engine accepts."""
    return st.sampled_from(choices)


def gaussian(
    shape: tuple[int, ...], seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A seeded standard-normal tensor times ``scale``, built in float64 then cast to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


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
    """A list of views, each ``(B, D)``, seeded Gaussians with a drawn scale (unless ``scale`` is given)."""
    v = draw(st.integers(min_views, max_views))
    b = draw(st.integers(min_batch, max_batch))
    d = draw(st.integers(1, max_dim))
    s = draw(st.floats(0.1, 10.0)) if scale is None else scale
    seed = draw(seeds())
    return [gaussian((b, d), seed + i, s, dtype) for i in range(v)]


@st.composite
def labelled_views(draw: st.DrawFn, **kwargs: object) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Views plus labels for their batch."""
    vs = draw(views(**kwargs))
    return vs, draw(labels(vs[0].shape[0]))


@dataclass
class EngineProblem:
    """Everything ``row_stats`` takes, drawn together."""

    anchors: torch.Tensor
    candidates: torch.Tensor
    anchor_labels: torch.Tensor
    candidate_labels: torch.Tensor
    anchor_index: torch.Tensor
    temperature: float
    exponents: tuple[float, ...]
    block_size: int
    symmetric: bool


@st.composite
def engine_problems(
    draw: st.DrawFn, dtype: st.SearchStrategy[torch.dtype] | None = None, max_rows: int = 40, max_dim: int = 8
) -> EngineProblem:
    """A random row-statistics problem: symmetric or not, any labels, self columns, exponents, block size."""
    dt = draw(dtypes() if dtype is None else dtype)
    symmetric = draw(st.booleans())
    m = draw(st.integers(1, max_rows))
    d = draw(st.integers(1, max_dim))
    scale = draw(st.floats(0.1, 3.0))
    anchors = gaussian((m, d), draw(seeds()), scale, dt)
    anchor_labels = draw(labels(m))
    if symmetric:
        candidates, candidate_labels, anchor_index = anchors, anchor_labels, torch.arange(m)
    else:
        n = draw(st.integers(1, max_rows))
        candidates = gaussian((n, d), draw(seeds()), scale, dt)
        candidate_labels = torch.cat([anchor_labels, torch.full((n,), -1), draw(labels(n))])[
            torch.randperm(m + 2 * n, generator=torch.Generator().manual_seed(draw(seeds())))[:n]
        ]
        anchor_index = torch.randint(-1, n, (m,), generator=torch.Generator().manual_seed(draw(seeds())))
    exponents = tuple(
        draw(st.lists(st.sampled_from([1.0, 0.0, 0.5, 2.0, 1.5]), min_size=1, max_size=3, unique=True))
    )
    return EngineProblem(
        anchors,
        candidates,
        anchor_labels,
        candidate_labels,
        anchor_index,
        draw(temperatures(0.05, 5.0)),
        exponents,
        draw(st.integers(1, max_rows + 5)),
        symmetric,
    )
