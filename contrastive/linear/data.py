"""The spiked covariance model with homo- or heteroskedastic noise (Ji et al., 2021)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = ["RandomState", "as_rng", "noise_profile", "spiked_covariance"]

RandomState = int | np.random.Generator | None


def as_rng(random_state: RandomState) -> np.random.Generator:
    """Turn ``None``, an int seed or a ``numpy.random.Generator`` into a ``numpy.random.Generator``."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (
        isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
    ):
        return np.random.default_rng(random_state)
    raise ValueError(
        f"random_state must be None, an int seed or a numpy.random.Generator, got {random_state!r}"
    )


def noise_profile(
    d: int,
    noise_std: float = 1.0,
    noise: Literal["heteroskedastic", "homoskedastic"] = "heteroskedastic",
    noise_ratio: float = 10.0,
) -> np.ndarray:
    """Noise std per coordinate (d,): constant, or linear from ``noise_std`` to ``noise_std/noise_ratio``."""
    _check_positive_int("d", d)
    _check_positive("noise_std", noise_std, allow_zero=True)
    if noise == "homoskedastic":
        return np.full(d, float(noise_std))
    if noise == "heteroskedastic":
        _check_positive("noise_ratio", noise_ratio)
        if noise_ratio < 1:
            raise ValueError(
                f"noise_ratio must be >= 1 (largest over smallest noise std), got noise_ratio={noise_ratio!r}"
            )
        return np.linspace(noise_std, noise_std / noise_ratio, d)
    raise ValueError(f"noise must be 'heteroskedastic' or 'homoskedastic', got noise={noise!r}")


def spiked_covariance(
    n: int,
    d: int,
    r: int,
    *,
    signal_std: float = 1.0,
    noise_std: float = 1.0,
    noise: Literal["heteroskedastic", "homoskedastic"] = "heteroskedastic",
    noise_ratio: float = 10.0,
    random_state: RandomState = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Draw ``n`` samples of :math:`x = U z + \xi`; return ``(X, U)``, X (n, d) and the true basis U (d, r).

    The spiked covariance model of Ji et al. (arXiv:2110.02473): :math:`U` is a
    uniformly random d x r matrix with orthonormal columns (so incoherent with
    the coordinate axes with high probability), the signal is
    :math:`z \sim N(0, \nu^2 I_r)` with :math:`\nu` = ``signal_std``, and the
    noise is :math:`\xi \sim N(0, \operatorname{diag}(\sigma_1^2, \dots, \sigma_d^2))`
    with :math:`\sigma` from :func:`noise_profile`: all equal to ``noise_std``
    (``"homoskedastic"``) or decreasing linearly from ``noise_std`` to
    ``noise_std / noise_ratio`` (``"heteroskedastic"``). The population
    covariance is :math:`\nu^2 UU^\top + \operatorname{diag}(\sigma^2)`.
    """
    _check_positive_int("n", n)
    _check_positive_int("d", d)
    _check_positive_int("r", r)
    if r > d:
        raise ValueError(f"r must be at most d, got r={r} and d={d}")
    _check_positive("signal_std", signal_std, allow_zero=True)
    sigma = noise_profile(d, noise_std=noise_std, noise=noise, noise_ratio=noise_ratio)
    rng = as_rng(random_state)
    q, rr = np.linalg.qr(rng.standard_normal((d, r)))
    basis = q * np.sign(np.diag(rr))  # Haar-distributed orthonormal columns
    z = rng.standard_normal((n, r)) * signal_std
    xi = rng.standard_normal((n, d)) * sigma
    return z @ basis.T + xi, basis


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating)) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {name}={value!r}")
