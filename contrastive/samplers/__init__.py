"""Negative samplers: how the negative term is formed from row statistics."""

from __future__ import annotations

from typing import Any

from contrastive.samplers.base import Sampler
from contrastive.samplers.debiased import DebiasedSampler
from contrastive.samplers.hard import HardNegativeSampler
from contrastive.samplers.queue import MemoryQueue
from contrastive.samplers.uniform import UniformSampler

_BUILTIN: dict[str, type[Sampler]] = {
    "uniform": UniformSampler,
    "debiased": DebiasedSampler,
    "hard": HardNegativeSampler,
}


def resolve_sampler(sampler: Any = "uniform", **options: Any) -> Any:
    """Return a sampler from a name or class (through ``contrastive.registry.get_sampler``) or an instance.

    An instance is anything with ``exponents`` and ``log_negative_term`` (normally a
    :class:`Sampler`). A built-in name the registry does not know (its plugin modules
    not loaded, or no registry yet) is looked up among the built-in classes directly.
    """
    if sampler is None:
        sampler = "uniform"
    if not isinstance(sampler, (str, type)):
        if not (hasattr(sampler, "exponents") and callable(getattr(sampler, "log_negative_term", None))):
            raise ValueError(
                f"sampler must be a name or a Sampler (with exponents and log_negative_term), got {sampler!r}"
            )
        if options:
            raise ValueError(f"sampler options {sorted(options)} apply only when selecting a sampler by name")
        return sampler
    try:
        from contrastive import registry
    except ImportError:  # the registry is optional while the package is assembled
        registry = None
    if registry is not None and hasattr(registry, "get_sampler"):
        try:
            return resolve_sampler(registry.get_sampler(sampler, **options))
        except LookupError:
            if sampler not in _BUILTIN:
                raise
    elif isinstance(sampler, type):
        return resolve_sampler(sampler(**options))
    if sampler not in _BUILTIN:
        raise ValueError(f"sampler must be one of {sorted(_BUILTIN)} or a Sampler instance, got {sampler!r}")
    return _BUILTIN[sampler](**options)


__all__ = [
    "DebiasedSampler",
    "HardNegativeSampler",
    "MemoryQueue",
    "Sampler",
    "UniformSampler",
    "resolve_sampler",
]
