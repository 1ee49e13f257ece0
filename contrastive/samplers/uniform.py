"""The uniform sampler: the standard InfoNCE / NT-Xent denominator."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from contrastive.engine import RowStats
from contrastive.hookspecs import hookimpl
from contrastive.samplers.base import Sampler

Tensor = torch.Tensor


class UniformSampler(Sampler):
    r"""Every negative counts once: :math:`N_g(i) = \sum_{j \in N(i)} e^{s_{ij}}`.

    The denominator of InfoNCE (van den Oord et al., 2018, "Representation Learning
    with Contrastive Predictive Coding") and of SimCLR's NT-Xent (Chen et al., 2020).
    ``draw`` picks negatives uniformly.
    """

    uniform_options: ClassVar[dict[str, Any] | None] = {}

    exponents = (1.0,)

    def log_negative_term(self, stats: RowStats, temperature: float | Tensor) -> Tensor:
        """Return :math:`\\log \\sum_{j\\in N(i)} e^{s_{ij}}`."""
        return stats.neg_lse_at(1.0)

    def is_uniform(self) -> bool:
        """Always: this is the uniform denominator."""
        return True


@hookimpl
def register_samplers(register) -> None:  # noqa: ANN001
    """Register ``uniform``."""
    register("uniform", UniformSampler)
