"""Metrics against their closed forms: uniformity of points uniform on the sphere (Wang & Isola 2020)."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive import metrics


def log_bessel_i0(x: float) -> float:
    """ln I_0(x) from the power series sum_k (x/2)^(2k) / (k!)^2."""
    return math.log(sum((x / 2) ** (2 * k) / math.factorial(k) ** 2 for k in range(60)))


def uniform_on_sphere(n: int, d: int, seed: int) -> torch.Tensor:
    """``n`` points uniform on S^{d-1} (normalised standard Gaussians), float64."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return z / z.norm(dim=1, keepdim=True)


# For x, y uniform and independent on S^{d-1}, ||x - y||^2 = 2 - 2u with u = <x, y>, so
# log E exp(-2 ||x - y||^2) = -4 + log E exp(4u); u has density proportional to (1 - u^2)^((d-3)/2).
CLOSED_FORMS = {
    2: -4.0 + log_bessel_i0(4.0),  # u = cos(theta), theta uniform: E exp(4u) = I_0(4)
    3: math.log((1 - math.exp(-8.0)) / 8),  # u uniform on [-1, 1]: E exp(4u) = sinh(4) / 4
}


def test_the_closed_form_for_the_circle_is_the_papers_value() -> None:
    assert CLOSED_FORMS[2] == pytest.approx(-1.5750, abs=5e-5)


@pytest.mark.parametrize("d", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("seed", [0, 1])
def test_uniformity_of_uniform_points_on_the_sphere_equals_the_closed_form(d: int, seed: int) -> None:
    # The kernel's mean over y is the same for every x (rotation invariance), so the pair average is a
    # degenerate U-statistic: its error shrinks like 1/n, about 1e-3 at n = 3000.
    z = uniform_on_sphere(3000, d, seed)
    assert metrics.uniformity(z, t=2.0).item() == pytest.approx(CLOSED_FORMS[d], abs=0.01)


def test_uniformity_does_not_depend_on_the_block_size() -> None:
    z = uniform_on_sphere(700, 3, seed=2)
    whole = metrics.uniformity(z, block_size=4096)
    assert metrics.uniformity(z, block_size=64).item() == pytest.approx(whole.item(), abs=1e-12)


def test_points_clustered_on_a_cap_are_far_above_the_uniform_value() -> None:
    cap = uniform_on_sphere(2000, 3, seed=3) * 0.1 + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert metrics.uniformity(cap).item() > CLOSED_FORMS[3] + 1.0
