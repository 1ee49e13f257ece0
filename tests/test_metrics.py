"""Metrics: each checked against its definition, a brute-force version, or a known configuration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrastive import metrics


@st.composite
def embeddings(draw: st.DrawFn, min_rows: int = 2, max_rows: int = 24) -> torch.Tensor:
    """A (N, D) float64 tensor from a drawn seed."""
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def random_rotation(d: int, seed: int) -> torch.Tensor:
    """A random orthogonal (d, d) matrix."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def regular_simplex(k: int, d: int) -> torch.Tensor:
    """K unit vectors in R^d (d >= k) with pairwise inner products -1/(K-1)."""
    e = torch.eye(k, d, dtype=torch.float64)
    return F.normalize(e - e.mean(dim=0), dim=1)


@given(embeddings(), st.integers(0, 1000))
def test_alignment_is_zero_for_identical_views_and_rotation_invariant(z: torch.Tensor, seed: int) -> None:
    assert metrics.alignment(z, z).item() == pytest.approx(0.0, abs=1e-12)
    noisy = z + 0.1 * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=z.dtype)
    r = random_rotation(z.shape[1], seed)
    assert metrics.alignment(z @ r, noisy @ r).item() == pytest.approx(metrics.alignment(z, noisy).item())


@given(embeddings(), st.floats(0.5, 3.0))
def test_alignment_of_antipodal_views_is_two_to_the_alpha(z: torch.Tensor, alpha: float) -> None:
    z = z + 1e-3  # keep rows away from zero
    assert metrics.alignment(z, -z, alpha=alpha).item() == pytest.approx(2.0**alpha)


@given(embeddings(), st.floats(0.5, 4.0), st.integers(1, 7))
def test_uniformity_matches_the_all_pairs_definition(z: torch.Tensor, t: float, block: int) -> None:
    u = F.normalize(z, dim=1)
    brute = torch.pdist(u).pow(2).mul(-t).exp().mean().log()
    assert metrics.uniformity(z, t=t, block_size=block).item() == pytest.approx(brute.item(), abs=1e-10)


def test_uniformity_is_zero_when_collapsed_and_lower_when_spread() -> None:
    collapsed = torch.ones(10, 3, dtype=torch.float64)
    assert metrics.uniformity(collapsed).item() == pytest.approx(0.0, abs=1e-12)
    spread = regular_simplex(4, 4)
    assert metrics.uniformity(spread).item() < metrics.uniformity(spread + 0.5).item() < 0


@given(embeddings(min_rows=3))
def test_effective_rank_lies_between_one_and_the_rank(z: torch.Tensor) -> None:
    rank = metrics.effective_rank(z).item()
    assert 1.0 - 1e-9 <= rank <= min(z.shape[0] - 1, z.shape[1]) + 1e-9


def test_effective_rank_of_known_spectra() -> None:
    line = torch.arange(10, dtype=torch.float64)[:, None] * torch.tensor(
        [[1.0, 2.0, -1.0]], dtype=torch.float64
    )
    assert metrics.effective_rank(line).item() == pytest.approx(1.0)
    # +-e_1, ..., +-e_r: centred, r equal singular values -> effective rank exactly r
    for r in (2, 3, 5):
        eye = torch.eye(r, 6, dtype=torch.float64)
        assert metrics.effective_rank(torch.cat([eye, -eye])).item() == pytest.approx(r)


@given(st.integers(2, 6), st.integers(0, 6), st.integers(1, 4), st.integers(0, 1000))
def test_simplex_distance_is_zero_on_a_rotated_regular_simplex(
    k: int, extra: int, copies: int, seed: int
) -> None:
    d = k + extra
    points = regular_simplex(k, d) @ random_rotation(d, seed)
    z = points.repeat(copies, 1)
    labels = torch.arange(k).repeat(copies)
    assert metrics.simplex_distance(z, labels).item() == pytest.approx(0.0, abs=1e-9)
    assert metrics.class_collapse(z, labels).item() == pytest.approx(0.0, abs=1e-12)


def test_simplex_distance_is_positive_when_class_means_coincide() -> None:
    z = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [1.0, -0.1]], dtype=torch.float64)
    assert metrics.simplex_distance(z, torch.tensor([0, 0, 1, 1])).item() > 0.5
    with pytest.raises(ValueError, match="at least 2 classes"):
        metrics.simplex_distance(z, torch.zeros(4, dtype=torch.long))


@pytest.mark.slow
def test_linear_probe_separates_separable_classes_and_not_random_labels() -> None:
    g = torch.Generator().manual_seed(0)
    centers = 4.0 * torch.randn(3, 5, generator=g)
    y = torch.arange(300) % 3
    x = centers[y] + torch.randn(300, 5, generator=g)
    assert metrics.linear_probe_accuracy(x[:200], y[:200], x[200:], y[200:]) >= 0.97
    noise = torch.randn(300, 5, generator=g)
    random_labels = torch.randint(0, 3, (300,), generator=g)
    assert (
        metrics.linear_probe_accuracy(noise[:200], random_labels[:200], noise[200:], random_labels[200:])
        < 0.6
    )


@pytest.mark.slow
def test_probe_keeps_the_original_label_values() -> None:
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    y = torch.tensor([7, 7, 42, 42])
    assert metrics.linear_probe_accuracy(x, y, x, y) == 1.0
    assert metrics.knn_accuracy(torch.cat([x, x + 0.1]), torch.cat([y, y]), x, y, k=2) == 1.0


@given(st.integers(0, 1000), st.floats(0.1, 100.0))
def test_knn_recovers_clusters_and_ignores_feature_scale(seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(4, 6, generator=g), dim=1)
    y = torch.arange(80) % 4
    z = directions[y] + 0.05 * torch.randn(80, 6, generator=g)
    acc = metrics.knn_accuracy(z[:60], y[:60], z[60:], y[60:], k=5, block_size=7)
    assert acc == metrics.knn_accuracy(scale * z[:60], y[:60], scale * z[60:], y[60:], k=5)
    assert acc >= 0.95


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: metrics.alignment(torch.zeros(3), torch.zeros(3)), "z1"),
        (lambda: metrics.alignment(torch.zeros(3, 2), torch.zeros(4, 2)), "z1 and z2"),
        (lambda: metrics.uniformity(torch.zeros(1, 2)), "z"),
        (lambda: metrics.uniformity(torch.zeros(3, 2), t=0.0), "t"),
        (lambda: metrics.simplex_distance(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long)), "labels"),
        (lambda: metrics.class_collapse(torch.zeros(4, 2), torch.zeros(4)), "labels"),
        (
            lambda: metrics.knn_accuracy(
                torch.zeros(4, 2),
                torch.zeros(4, dtype=torch.long),
                torch.zeros(2, 3),
                torch.zeros(2, dtype=torch.long),
            ),
            "feature dimension",
        ),
        (
            lambda: metrics.knn_accuracy(
                torch.zeros(4, 2),
                torch.zeros(4, dtype=torch.long),
                torch.zeros(2, 2),
                torch.zeros(2, dtype=torch.long),
                k=0,
            ),
            "k",
        ),
    ],
)
def test_bad_input_names_the_argument(call: object, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        call()  # type: ignore[operator]


def test_uniformity_handles_many_rows_in_blocks() -> None:
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    blocked = metrics.uniformity(z, block_size=300).item()
    brute = torch.pdist(F.normalize(z, dim=1)).pow(2).mul(-2.0).exp().mean().log().item()
    assert blocked == pytest.approx(brute, abs=1e-10)
    assert math.isfinite(blocked)
