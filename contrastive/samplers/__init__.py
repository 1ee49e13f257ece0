"""Negative samplers: how the negative term is formed from row statistics."""

from __future__ import annotations

from typing import Any

from contrastive.registry import get_sampler
from contrastive.samplers.base import Sampler
from contrastive.samplers.debiased import DebiasedSampler
from contrastive.samplers.hard import HardNegativeSampler
from contrastive.samplers.queue import MemoryQueue
from contrastive.samplers.uniform import UniformSampler


def resolve_sampler(sampler: Any = "uniform", **options: Any) -> Sampler:
    """Return a sampler from a registered name, a class or an instance (``None`` means uniform).

    Names go through :func:`contrastive.get_sampler`, so third-party samplers work
    wherever a built-in does. An instance must have ``exponents`` and
    ``log_negative_term`` (normally it is a :class:`Sampler`).
    """
    instance = get_sampler("uniform" if sampler is None else sampler, **options)
    if not (hasattr(instance, "exponents") and callable(getattr(instance, "log_negative_term", None))):
        raise ValueError(
            f"sampler must be a name or a Sampler (with exponents and log_negative_term), got {instance!r}"
        )
    return instance


__all__ = [
    "DebiasedSampler",
    "HardNegativeSampler",
    "MemoryQueue",
    "Sampler",
    "UniformSampler",
    "resolve_sampler",
]
