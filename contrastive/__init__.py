"""contrastive: contrastive representation learning with pluggable losses, samplers and augmentations.

The public API is exactly what this module lists in ``__all__``. Plugins load
lazily: importing this package loads none of them.
"""

from __future__ import annotations

from contrastive import functional, metrics
from contrastive._version import __version__
from contrastive.augment.base import Augmentation, RandomAugmentation
from contrastive.augment.masking import RandomMask
from contrastive.augment.pipelines import Compose, SimCLRAugmentation
from contrastive.engine import RowStats, dual_row_stats, row_stats
from contrastive.gradcache import GradCache
from contrastive.hookspecs import hookimpl
from contrastive.losses.clip import ClipLoss
from contrastive.losses.dcl import DCLLoss
from contrastive.losses.infonce import InfoNCELoss
from contrastive.losses.linear_spectral import LinearSpectralContrastiveLoss
from contrastive.losses.nt_xent import NTXentLoss
from contrastive.losses.spectral import SpectralContrastiveLoss
from contrastive.losses.supcon import SupConLoss
from contrastive.errors import NoPositiveWarning
from contrastive.registry import (
    PluginCollisionError,
    PluginError,
    PluginInfo,
    PluginLoadWarning,
    UnknownPluginError,
    get_augmentation,
    get_loss,
    get_sampler,
    list_augmentations,
    list_losses,
    list_samplers,
    plugins,
)
from contrastive.samplers import (
    DebiasedSampler,
    HardNegativeSampler,
    MemoryQueue,
    Sampler,
    UniformSampler,
)

__all__ = [
    "__version__",
    "Augmentation",
    "ClipLoss",
    "DCLLoss",
    "Compose",
    "DebiasedSampler",
    "functional",
    "get_augmentation",
    "get_loss",
    "get_sampler",
    "GradCache",
    "HardNegativeSampler",
    "hookimpl",
    "InfoNCELoss",
    "linear",
    "LinearSpectralContrastiveLoss",
    "list_augmentations",
    "list_losses",
    "list_samplers",
    "MemoryQueue",
    "metrics",
    "NTXentLoss",
    "PluginCollisionError",
    "PluginError",
    "PluginInfo",
    "PluginLoadWarning",
    "NoPositiveWarning",
    "plugins",
    "RandomAugmentation",
    "RandomMask",
    "row_stats",
    "dual_row_stats",
    "RowStats",
    "Sampler",
    "SimCLRAugmentation",
    "SpectralContrastiveLoss",
    "SupConLoss",
    "UniformSampler",
    "UnknownPluginError",
]


def __getattr__(name: str) -> object:
    """Import :mod:`contrastive.linear` on first use (it is not needed to train with the losses)."""
    if name == "linear":
        import importlib

        return importlib.import_module("contrastive.linear")
    raise AttributeError(f"module 'contrastive' has no attribute {name!r}")
