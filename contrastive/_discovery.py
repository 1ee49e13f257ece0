"""Finding plugins: the built-in modules and the ``contrastive`` entry-point group.

Honours ``CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD`` (built-ins only) and
``CONTRASTIVE_PLUGINS`` (an allow-list of entry-point or distribution names).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from contrastive._version import __version__
from contrastive.errors import PluginConfigWarning

ENTRY_POINT_GROUP = "contrastive"

#: The kinds of plugin, each with the hook that registers it.
KINDS: dict[str, str] = {
    "loss": "register_losses",
    "sampler": "register_samplers",
    "augmentation": "register_augmentations",
}


@dataclass
class Candidate:
    """A plugin waiting to be registered: how to get its object and who it is."""

    name: str
    load: Callable[[], Any]
    version: str | None
    distribution: str | None
    builtin: bool
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})


def env_flag(name: str) -> bool:
    """Whether variable ``name`` is set to anything but empty/0/false/no/off."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _allow_list() -> set[str] | None:
    """The normalised names in ``CONTRASTIVE_PLUGINS``, or ``None`` when it is not set."""
    raw = os.environ.get("CONTRASTIVE_PLUGINS")
    if raw is None:
        return None
    allowed = {_normalize(item) for item in raw.split(",") if item.strip()}
    if not allowed:  # most often `export CONTRASTIVE_PLUGINS=` by accident, which loads no plugin at all
        warnings.warn(
            f"CONTRASTIVE_PLUGINS is set but names no plugin ({raw!r}), so no third-party plugin is "
            "loaded; to load none on purpose, set CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD=1 instead; "
            "to load all of them, unset CONTRASTIVE_PLUGINS",
            PluginConfigWarning,
            stacklevel=6,
        )
    return allowed


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def find_plugins(default_plugins: Iterable[str]) -> list[Candidate]:
    """The plugins to load, in order: built-in modules, then entry points sorted by name."""
    found = [
        Candidate(
            name=module,
            load=lambda module=module: importlib.import_module(module),
            version=__version__,
            distribution="contrastive-kit",
            builtin=True,
        )
        for module in default_plugins
    ]
    if env_flag("CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD"):
        return found
    allowed = _allow_list()
    matched: set[str] = set()
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        if allowed is not None:
            keys = {_normalize(ep.name)} | ({_normalize(dist_name)} if dist_name else set())
            if not keys & allowed:
                continue
            matched |= keys & allowed
        found.append(
            Candidate(
                name=ep.name,
                load=ep.load,
                version=dist.version if dist is not None else None,
                distribution=dist_name,
                builtin=False,
            )
        )
    for missing in sorted((allowed or set()) - matched):
        warnings.warn(
            f"CONTRASTIVE_PLUGINS names {missing!r}, but no installed plugin in the "
            f"{ENTRY_POINT_GROUP!r} entry-point group has that name",
            PluginConfigWarning,
            stacklevel=5,
        )
    return found
