"""Exceptions and warnings raised by the plugin registry and the losses."""

from __future__ import annotations


class PluginError(RuntimeError):
    """A plugin failed to import or register (raised under ``CONTRASTIVE_STRICT_PLUGINS=1``)."""


class PluginCollisionError(PluginError):
    """Two plugins registered the same name and the later one did not pass ``override=True``."""


class PluginLoadWarning(UserWarning):
    """Warned when a plugin fails to load and is skipped."""


class PluginConfigWarning(PluginLoadWarning):
    """Warned when the plugin environment variables select something odd (an empty or unmatched allow-list).

    ``contrastive plugins`` shows these on stderr; the failures of single plugins it shows in its table.
    """


class NoPositiveWarning(UserWarning):
    """Warned (once per loss) when a batch has no positive pair and the loss returns 0 (``no_positive="zero"``)."""


class UnknownPluginError(LookupError, ValueError):
    """No plugin of that kind is registered under the requested name."""
