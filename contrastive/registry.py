"""The plugin registry: a pluggy manager, entry-point loading and name lookup.

Built-in plugins are ordinary plugin modules listed in :data:`DEFAULT_PLUGINS`;
third-party plugins are found through the ``contrastive`` entry-point group.
Nothing is loaded until the registry is first used.

Environment variables:

``CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD=1``
    load the built-ins only.
``CONTRASTIVE_PLUGINS=a,b``
    load only these third-party plugins (entry-point or distribution names).
``CONTRASTIVE_STRICT_PLUGINS=1``
    a plugin that fails to load raises :class:`PluginError` instead of warning.

Loading is all or nothing per plugin and per attempt: a plugin that raises anything while it
is imported or registered (``sys.exit()`` included) is skipped and reported, and a
:exc:`KeyboardInterrupt` during loading leaves the registry as if loading had not started.
"""

from __future__ import annotations

import fnmatch
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy
import torch

from contrastive import hookspecs
from contrastive._discovery import (
    KINDS,
    Candidate,
    env_flag,
    find_plugins,
)
from contrastive._plugin_kinds import checked, describe_failure, qualified_name, unknown_message
from contrastive.errors import (
    PluginCollisionError,
    PluginError,
    PluginLoadWarning,
    UnknownPluginError,
)

if TYPE_CHECKING:  # contrastive.samplers imports this module
    from contrastive.samplers.base import Sampler

#: Modules whose hook implementations register the built-in plugins.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "contrastive.losses.nt_xent",
    "contrastive.losses.supcon",
    "contrastive.losses.dcl",
    "contrastive.losses.infonce",
    "contrastive.losses.clip",
    "contrastive.losses.spectral",
    "contrastive.losses.linear_spectral",
    "contrastive.samplers.uniform",
    "contrastive.samplers.hard",
    "contrastive.samplers.debiased",
    "contrastive.augment.crop",
    "contrastive.augment.flip",
    "contrastive.augment.color",
    "contrastive.augment.jitter",
    "contrastive.augment.blur",
    "contrastive.augment.pipelines",
    "contrastive.augment.masking",
)

@dataclass(frozen=True)
class PluginInfo:
    """What one plugin is and what it registered."""

    name: str
    version: str | None
    distribution: str | None
    builtin: bool
    losses: tuple[str, ...] = ()
    samplers: tuple[str, ...] = ()
    augmentations: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the plugin loaded and registered without error."""
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of this record."""
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "builtin": self.builtin,
            "losses": list(self.losses),
            "samplers": list(self.samplers),
            "augmentations": list(self.augmentations),
            "status": "ok" if self.ok else "failed",
            "error": self.error,
        }


@dataclass
class _Entry:
    factory: Any
    plugin: str


class Registry:
    """Holds the plugin manager and the name -> factory tables; loads lazily."""

    def __init__(self, default_plugins: Iterable[str] | None = None) -> None:
        self._default_plugins = tuple(DEFAULT_PLUGINS if default_plugins is None else default_plugins)
        self._lock = threading.RLock()
        self._loaded = False
        self._tables: dict[str, dict[str, _Entry]] = {k: {} for k in KINDS}
        self._infos: list[PluginInfo] = []
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)

    @property
    def loaded(self) -> bool:
        """Whether plugins have been loaded yet."""
        return self._loaded

    # -- loading -----------------------------------------------------------
    def ensure_loaded(self, *, strict: bool | None = None) -> None:
        """Load every plugin once; later calls do nothing.

        ``strict`` (default: ``CONTRASTIVE_STRICT_PLUGINS``) raises :class:`PluginError` on the
        first plugin that fails. Whatever interrupts loading (that error, or a
        :exc:`KeyboardInterrupt`) leaves the registry as if loading had never started.
        """
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            strict = env_flag("CONTRASTIVE_STRICT_PLUGINS") if strict is None else strict
            try:
                for candidate in find_plugins(self._default_plugins):
                    error = self._load_one(candidate)
                    if error is not None:
                        self._fail(candidate, error, strict)
                    else:
                        self._infos.append(self._info(candidate, None))
            except BaseException:
                # strict mode (every use raises until the plugin is fixed) or Ctrl-C: nothing half loaded
                self._clear()
                raise
            self._loaded = True

    def _clear(self) -> None:
        for name, plugin in list(self.manager.list_name_plugin()):
            self.manager.unregister(plugin, name=name)
        self._tables = {k: {} for k in KINDS}
        self._infos = []

    def _load_one(self, candidate: Candidate) -> BaseException | None:
        """Import and register one plugin; all or nothing. Returns the error, if any.

        Anything a plugin raises counts as its failure, ``SystemExit`` included, except
        :exc:`KeyboardInterrupt`, which propagates (the caller then unloads everything).
        """
        plugin: object = None
        staged: dict[str, dict[str, _Entry]] = {k: {} for k in KINDS}
        try:
            plugin = candidate.load()
            if self.manager.is_registered(plugin) or self.manager.has_plugin(candidate.name):
                plugin = None  # registered under another name: not ours to unregister
                raise PluginError(f"plugin {candidate.name!r} is already registered")
            self.manager.register(plugin, name=candidate.name)
            self.manager.check_pending()  # a hook implementation with no matching spec
            for kind, hook_name in KINDS.items():
                hook = getattr(self.manager.hook, hook_name)
                for impl in hook.get_hookimpls():
                    if impl.plugin is plugin:
                        register = self._register_callback(candidate, kind, staged[kind])
                        impl.function(**({"register": register} if "register" in impl.argnames else {}))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken plugin breaks neither the rest nor the host
            if plugin is not None and self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            return exc
        for kind, entries in staged.items():
            self._tables[kind].update(entries)
            candidate.registered[kind] = list(entries)
        return None

    def _register_callback(
        self, candidate: Candidate, kind: str, staged: dict[str, _Entry]
    ) -> Callable[..., None]:
        def register(name: str, factory: Any, *, override: bool = False) -> None:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
            if not callable(factory):
                raise TypeError(
                    f"plugin {candidate.name!r} registered {kind} {name!r} with {factory!r}, "
                    "which is not a class or callable"
                )
            previous = staged.get(name) or self._tables[kind].get(name)
            if previous is not None and not override:
                raise PluginCollisionError(
                    f"plugin {candidate.name!r} cannot register {kind} {name!r}: the name is "
                    f"already registered by plugin {previous.plugin!r}; pass override=True to "
                    "replace it"
                )
            staged[name] = _Entry(factory, candidate.name)

        return register

    def _info(self, candidate: Candidate, error: str | None) -> PluginInfo:
        return PluginInfo(
            name=candidate.name,
            version=candidate.version,
            distribution=candidate.distribution,
            builtin=candidate.builtin,
            losses=tuple(candidate.registered["loss"]),
            samplers=tuple(candidate.registered["sampler"]),
            augmentations=tuple(candidate.registered["augmentation"]),
            error=error,
        )

    def _fail(self, candidate: Candidate, exc: BaseException, strict: bool) -> None:
        message = describe_failure(exc)
        self._infos.append(self._info(candidate, message))
        if strict:
            error_type = type(exc) if isinstance(exc, PluginError) else PluginError
            raise error_type(
                f"contrastive plugin {candidate.name!r} failed to load: {message} "
                "(CONTRASTIVE_STRICT_PLUGINS is set)"
            ) from exc
        text = f"contrastive plugin {candidate.name!r} failed to load and was skipped: {message}"
        warnings.warn(text, PluginLoadWarning, stacklevel=5)

    # -- lookup ------------------------------------------------------------
    def names(self, kind: str, include: str | Iterable[str] | None = None,
              exclude: str | Iterable[str] | None = None) -> list[str]:
        """Sorted names of one kind, filtered by fnmatch ``include``/``exclude`` patterns."""
        self.ensure_loaded()
        names = sorted(self._tables[kind])
        if include is not None:
            patterns = [include] if isinstance(include, str) else list(include)
            names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if exclude is not None:
            patterns = [exclude] if isinstance(exclude, str) else list(exclude)
            names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in patterns)]
        return names

    def _entry(self, kind: str, name: str) -> _Entry:
        self.ensure_loaded()
        entry = self._tables[kind].get(name)
        if entry is None:
            raise UnknownPluginError(unknown_message(kind, name, sorted(self._tables[kind])))
        return entry

    def factory(self, kind: str, name: str) -> Callable[..., Any]:
        """The registered factory of ``kind`` under ``name``; raises :class:`UnknownPluginError`."""
        return self._entry(kind, name).factory

    def provider(self, kind: str, name: str) -> str:
        """The name of the plugin that registered ``name``."""
        return self._entry(kind, name).plugin

    def get(self, kind: str, selection: Any, options: dict[str, Any]) -> Any:
        """Resolve a name, a class or an instance to an instance of ``kind``.

        What a factory or class builds is checked to be of ``kind`` (a :class:`torch.nn.Module`
        loss, a :class:`~contrastive.Sampler`, a callable augmentation), else :exc:`TypeError`
        names the plugin and what it returned. An instance is returned as it is.
        """
        if isinstance(selection, str):
            entry = self._entry(kind, selection)
            origin = (
                f"plugin {entry.plugin!r} registered {kind} {selection!r} with "
                f"{qualified_name(entry.factory)}, which"
            )
            return checked(kind, entry.factory(**options), origin)
        if isinstance(selection, type):
            return checked(kind, selection(**options), f"{kind} class {qualified_name(selection)}")
        if selection is None:
            raise TypeError(f"expected a {kind} name or instance, got None")
        if options:
            raise TypeError(
                f"options {sorted(options)} were given with a {kind} instance "
                f"({type(selection).__name__}); options apply only when selecting by name or class"
            )
        return selection

    def infos(self) -> list[PluginInfo]:
        """One record per plugin the registry tried to load, in load order."""
        self.ensure_loaded()
        return list(self._infos)

    def report(self) -> list[PluginInfo]:
        """Like :meth:`infos`, but in strict mode too it lists every plugin, failures included.

        Where strict loading fails, a second registry loads everything without strict mode to
        describe it; this registry stays unloaded, so strict mode still raises on every use.
        """
        try:
            return self.infos()
        except PluginError:
            probe = Registry(self._default_plugins)
            probe.ensure_loaded(strict=False)
            return probe.infos()


_registry = Registry()


def get_registry() -> Registry:
    """The process-wide registry (loaded on first use)."""
    return _registry


def reset(default_plugins: Iterable[str] | None = None) -> Registry:
    """Forget everything loaded and start a fresh registry (for tests and plugin development)."""
    global _registry
    _registry = Registry(default_plugins)
    return _registry


def get_loss(loss: str | type[torch.nn.Module] | torch.nn.Module, **options: Any) -> torch.nn.Module:
    """Return a loss module from a registered name, a class, or an instance (returned as is).

    Args:
        loss: a registered name (see :func:`list_losses`), a loss class, or a loss instance.
        **options: keyword arguments for the loss's factory or class (none with an instance).

    Raises:
        UnknownPluginError: no loss is registered under that name.
        TypeError: the factory built something other than a :class:`torch.nn.Module`; the
            message names the plugin and what it returned.
    """
    return _registry.get("loss", loss, options)


def get_sampler(sampler: str | type[Sampler] | Sampler, **options: Any) -> Sampler:
    """Return a negative sampler from a registered name, a class, or an instance (returned as is).

    Args:
        sampler: a registered name (see :func:`list_samplers`), a sampler class, or a sampler instance.
        **options: keyword arguments for the sampler's factory or class (none with an instance).

    Raises:
        UnknownPluginError: no sampler is registered under that name.
        TypeError: the factory built something other than a :class:`~contrastive.Sampler`; the
            message names the plugin and what it returned.
    """
    return _registry.get("sampler", sampler, options)


def get_augmentation(
    augmentation: str | type[Any] | Callable[..., torch.Tensor], **options: Any
) -> Callable[..., torch.Tensor]:
    """Return an augmentation, ``aug(x, generator=None) -> Tensor``, from a name, a class or an instance.

    Args:
        augmentation: a registered name (see :func:`list_augmentations`), an augmentation class,
            or an augmentation instance (any callable).
        **options: keyword arguments for the augmentation's factory or class (none with an instance).

    Raises:
        UnknownPluginError: no augmentation is registered under that name.
        TypeError: the factory built something that is not callable; the message names the
            plugin and what it returned.
    """
    return _registry.get("augmentation", augmentation, options)


def list_losses(include: str | Iterable[str] | None = None,
                exclude: str | Iterable[str] | None = None) -> list[str]:
    """Sorted names of the registered losses, optionally filtered by glob patterns."""
    return _registry.names("loss", include, exclude)


def list_samplers(include: str | Iterable[str] | None = None,
                  exclude: str | Iterable[str] | None = None) -> list[str]:
    """Sorted names of the registered negative samplers, optionally filtered by glob patterns."""
    return _registry.names("sampler", include, exclude)


def list_augmentations(include: str | Iterable[str] | None = None,
                       exclude: str | Iterable[str] | None = None) -> list[str]:
    """Sorted names of the registered augmentations, optionally filtered by glob patterns."""
    return _registry.names("augmentation", include, exclude)


def plugins() -> list[PluginInfo]:
    """Every plugin (built-in and third-party): version, what it registered, any load error."""
    return _registry.infos()
