"""contrastive: contrastive representation learning with pluggable losses, samplers and augmentations.

The public API is exactly what this module lists in ``__all__``. Plugins load
lazily: importing this package loads none of them.
"""

from __future__ import annotations

from contrastive._version import __version__
from contrastive.hookspecs import hookimpl
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

__all__ = [
    "PluginCollisionError",
    "PluginError",
    "PluginInfo",
    "PluginLoadWarning",
    "UnknownPluginError",
    "__version__",
    "get_augmentation",
    "get_loss",
    "get_sampler",
    "hookimpl",
    "list_augmentations",
    "list_losses",
    "list_samplers",
    "plugins",
]
