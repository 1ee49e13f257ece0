"""A tempered negative sampler: negatives weighted by exp(beta * s), without debiasing."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from contrastive.engine import RowStats
from contrastive.samplers.base import Sampler


class TemperedSampler(Sampler):
    r"""Negatives importance-weighted by :math:`e^{\beta s_{ij}}` (normalised by their mean).

    .. math::

        N_g(i) = |N(i)| \, \frac{\sum_{j \in N(i)} e^{(1+\beta) s_{ij}}}{\sum_{j \in N(i)} e^{\beta s_{ij}}}
               = |N(i)| \exp\big(\mathrm{lse}_i[1+\beta] - \mathrm{lse}_i[\beta]\big)

    This is the reweighting of Robinson et al. (2021) without their debiasing step,
    written only from the row statistics the engine provides: the sampler asks
    for exponents :math:`\beta` and :math:`1+\beta` and needs no kernel of its own.

    Args:
        beta: concentration on hard negatives; 0 gives the uniform denominator.
    """

    uniform_options: ClassVar[dict[str, Any] | None] = {"beta": 0.0}

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self.beta = float(beta)

    @property
    def exponents(self) -> tuple[float, ...]:  # type: ignore[override]
        """The exponents whose negative log-sum-exps this sampler reads."""
        return (1.0,) if self.beta == 0.0 else (self.beta, 1.0 + self.beta)

    def log_negative_term(self, stats: RowStats, temperature: float | torch.Tensor) -> torch.Tensor:
        """Return log N_g per anchor from the row statistics."""
        if self.beta == 0.0:
            return stats.neg_lse_at(1.0)
        log_count = torch.log(stats.neg_count.to(stats.neg_lse.dtype))  # -inf where no negative
        top, bottom = stats.neg_lse_at(1.0 + self.beta), stats.neg_lse_at(self.beta)
        # an anchor without negatives has lse = -inf: keep its term at -inf, not NaN
        return torch.where(stats.neg_count > 0, log_count + top - bottom.clamp_min(-1e30), top)

    def negative_log_weights(self, similarities: torch.Tensor) -> torch.Tensor:
        """Negatives are drawn with probability proportional to exp(beta * s)."""
        return self.beta * similarities
