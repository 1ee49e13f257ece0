"""Running one invariant as a hypothesis property and reporting a failure as ``ConformanceError``."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: Examples per invariant unless the caller asks for more (hypothesis shrinks any failure).
DEFAULT_MAX_EXAMPLES = 10


class ConformanceError(AssertionError):
    """A plugin broke an invariant; the message names it and the minimal failing example."""


@dataclass
class Subject:
    """The plugin under test: a display name and a way to get fresh instances."""

    kind: str
    name: str
    factory: Callable[..., Any] | None  # builds an instance from options; None for a bare instance
    prototype: Any

    def fresh(self, **options: Any) -> Any:
        """A new instance (from the factory when there is one, else a deep copy of the prototype)."""
        if self.factory is not None:
            return self.factory(**options)
        if options:
            raise TypeError(f"cannot apply options {sorted(options)} to a bare instance")
        return copy.deepcopy(self.prototype)

    def accepts_option(self, option: str) -> bool:
        """Whether the factory names a keyword argument ``option`` (a bare ``**kwargs`` does not count)."""
        if self.factory is None:
            return False
        target = self.factory
        if isinstance(target, type):
            target = target.__init__
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return False
        return option in params and params[option].kind is not inspect.Parameter.VAR_KEYWORD


def resolve(kind: str, plugin: Any) -> Subject:
    """Turn a registered name, a class or an instance into a :class:`Subject`."""
    if isinstance(plugin, str):
        from contrastive.registry import get_registry

        factory = get_registry().factory(kind, plugin)
        return Subject(kind, plugin, factory, factory())
    if isinstance(plugin, type):
        return Subject(kind, plugin.__name__, plugin, plugin())
    if plugin is None:
        raise TypeError(f"expected a {kind} name, class or instance, got None")
    return Subject(kind, type(plugin).__name__, None, plugin)


def check_property(
    subject: Subject,
    invariant: str,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], None],
    max_examples: int,
) -> None:
    """Run ``check`` on examples of ``strategy``; raise :class:`ConformanceError` on the shrunk failure."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(example: Any) -> None:
        check(example)

    try:
        prop()
    except Exception as exc:  # noqa: BLE001 - any failure of the plugin is a broken invariant
        notes = "\n".join(str(n) for n in getattr(exc, "__notes__", ()))
        raise ConformanceError(
            f"{subject.kind} {subject.name!r} breaks the invariant '{invariant}': "
            f"{type(exc).__name__}: {exc}\n{notes}".rstrip()
        ) from exc


def check_once(subject: Subject, invariant: str, check: Callable[[], None]) -> None:
    """Run a deterministic check; raise :class:`ConformanceError` naming the invariant on failure."""
    try:
        check()
    except Exception as exc:  # noqa: BLE001
        raise ConformanceError(
            f"{subject.kind} {subject.name!r} breaks the invariant '{invariant}': {type(exc).__name__}: {exc}"
        ) from exc
