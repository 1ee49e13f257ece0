"""Hypothesis strategies for contrastive tests: embeddings, views, labels, temperatures, engine problems.

The general builders live in :mod:`contrastive.testing.strategies` (public, for plugin
authors); this module re-exports them and adds the engine's own problem generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

# The general builders are public, for plugin authors too; this module adds the engine's own.
from contrastive.testing.strategies import (  # noqa: F401 (re-exported)
    FLOAT_DTYPES,
    dtypes,
    embeddings,
    gaussian,
    labelled_views,
    labels,
    seeds,
    temperatures,
    views,
)


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
