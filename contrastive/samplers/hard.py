"""The hard-negative sampler of Robinson et al. (2021): importance-weights negatives by e^{βs}."""

from __future__ import annotations

import math

from typing import Any, ClassVar

import torch

from contrastive._validation import check_non_negative, check_unit_interval
from contrastive.engine import RowStats
from contrastive.engine.explog import log
from contrastive.hookspecs import hookimpl
from contrastive.samplers.base import Sampler
from contrastive.samplers.debiased import debiased_log_negative

Tensor = torch.Tensor


class HardNegativeSampler(Sampler):
    r"""Hard negatives (Robinson et al., 2021, "Contrastive Learning with Hard Negative Samples", ICLR).

    Negatives are reweighted by
    :math:`w_{ij} = e^{\beta s_{ij}} / \frac{1}{|N(i)|}\sum_{k\in N(i)} e^{\beta s_{ik}}`,
    then debiased and clamped as in :class:`~contrastive.samplers.DebiasedSampler`:

    .. math::

        R_i = \sum_{j\in N(i)} w_{ij} e^{s_{ij}}
            = |N(i)|\, \exp\big(\mathrm{lse}_i[1+\beta] - \mathrm{lse}_i[\beta]\big),\qquad
        N_g(i) = \max\Big(\frac{R_i - \tau^+ |N(i)|\,\bar p_i}{1-\tau^+},\ |N(i)|\, e^{-1/\tau}\Big).

    ``beta=0`` is exactly the debiased sampler, and with ``tau_plus=0`` too the uniform one.
    ``draw`` samples negatives with probability proportional to :math:`e^{\beta s_{ij}}`.
    """

    uniform_options: ClassVar[dict[str, Any] | None] = {"beta": 0.0, "tau_plus": 0.0}

    def __init__(self, beta: float = 1.0, tau_plus: float = 0.1) -> None:
        """Create the sampler with concentration ``beta`` >= 0 and class prior ``tau_plus`` in [0, 1)."""
        super().__init__()
        self.beta = check_non_negative(beta, "beta")
        self.tau_plus = check_unit_interval(tau_plus, "tau_plus")

    @property
    def exponents(self) -> tuple[float, ...]:  # type: ignore[override]
        """γ = (β, 1+β); only γ = 1 when β = 0 (the weights are then all one)."""
        return (1.0,) if self.beta == 0.0 else (self.beta, 1.0 + self.beta)

    def reweighted_log_sum(self, stats: RowStats) -> Tensor:
        """Return :math:`\\log R_i`, the log of the importance-weighted negative sum."""
        if self.beta == 0.0:
            return stats.neg_lse_at(1.0)
        if stats.known_counts is not None and stats.known_counts[1] > 0:  # every anchor has |N| negatives
            return math.log(stats.known_counts[1]) + stats.neg_lse_at(1.0 + self.beta) - stats.neg_lse_at(self.beta)
        has_negative = stats.neg_count > 0
        zero = torch.zeros((), dtype=stats.neg_lse.dtype, device=stats.neg_lse.device)
        top = torch.where(has_negative, stats.neg_lse_at(1.0 + self.beta), zero)
        bottom = torch.where(has_negative, stats.neg_lse_at(self.beta), zero)
        log_count = log(stats.neg_count.clamp(min=1).to(top.dtype))
        return torch.where(has_negative, log_count + top - bottom, torch.full_like(top, float("-inf")))

    def log_negative_term(self, stats: RowStats, temperature: float | Tensor) -> Tensor:
        """Return the log of the reweighted, debiased negative term."""
        return debiased_log_negative(self.reweighted_log_sum(stats), stats, temperature, self.tau_plus)

    def is_uniform(self) -> bool:
        """With ``beta=0`` and ``tau_plus=0`` the weights are one and nothing is corrected."""
        return self.beta == 0.0 and self.tau_plus == 0.0

    def negative_log_weights(self, similarities: Tensor) -> Tensor:
        """Return :math:`\\beta s_{ij}`: negatives are drawn with probability ∝ :math:`e^{\\beta s_{ij}}`."""
        return self.beta * similarities

    def extra_repr(self) -> str:
        """Show ``beta`` and ``tau_plus``."""
        return f"beta={self.beta}, tau_plus={self.tau_plus}"


@hookimpl
def register_samplers(register) -> None:  # noqa: ANN001
    """Register ``hard``."""
    register("hard", HardNegativeSampler)
