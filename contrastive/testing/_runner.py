"""Running one invariant as a hypothesis property and reporting a failure as ``ConformanceError``.

How a plugin given as an instance is rebuilt with other options (the extreme-temperature
checks need ``temperature=1e-3`` and ``10``): an instance with an ``hparams`` mapping
(its constructor's keyword arguments, as Lightning's ``save_hyperparameters`` keeps them)
is rebuilt as ``type(instance)(**{**instance.hparams, **options})``. Any other instance
cannot be rebuilt: the checks that need it are skipped, listed in the returned
:class:`ConformanceReport` and announced with one :class:`ConformanceWarning`.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: Examples per invariant unless the caller asks for more (hypothesis shrinks any failure).
DEFAULT_MAX_EXAMPLES = 10


class ConformanceError(AssertionError):
    """A plugin broke an invariant; the message names it and the minimal failing example."""


class ConformanceWarning(UserWarning):
    """Some checks did not run: the plugin, given as an instance, cannot be rebuilt with other options."""


@dataclass
class ConformanceReport:
    """What one ``check_*`` call verified: the invariants that held and those it skipped, with the reason."""

    plugin: str  #: the kind and name, e.g. ``"loss 'nt_xent'"``
    checked: list[str] = field(default_factory=list)  #: invariants that held, in the order they ran
    skipped: dict[str, str] = field(default_factory=dict)  #: invariant -> why it did not run


def _keyword_arguments(target: Callable[..., Any] | None) -> set[str] | None:
    """The keyword arguments ``target`` names (a bare ``**kwargs`` does not count); None if unknown."""
    if target is None:
        return None
    if isinstance(target, type):
        target = target.__init__
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    return {
        name
        for name, p in params.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


@dataclass
class Subject:
    """The plugin under test: a display name, a way to get fresh instances, and what was checked."""

    kind: str
    name: str
    factory: Callable[..., Any] | None  # builds an instance from options; None for a bare instance
    prototype: Any
    signature: Callable[..., Any] | None = None  # what names the options (defaults to the factory)
    report: ConformanceReport = field(init=False)
    _loud: list[str] = field(default_factory=list, init=False)  # skips a class or name would not have

    def __post_init__(self) -> None:
        self.report = ConformanceReport(f"{self.kind} {self.name!r}")
        if self.signature is None:
            self.signature = self.factory if self.factory is not None else type(self.prototype)

    def fresh(self, **options: Any) -> Any:
        """A new instance (from the factory when there is one, else a deep copy of the prototype)."""
        if self.factory is not None:
            return self.factory(**options)
        if options:
            raise TypeError(f"cannot apply options {sorted(options)} to a bare instance")
        return copy.deepcopy(self.prototype)

    def accepts_option(self, option: str) -> bool:
        """Whether the plugin can be built with the keyword argument ``option``."""
        return self.factory is not None and self.why_not(option) is None

    def why_not(self, option: str) -> str | None:
        """Why the plugin cannot be built with ``option`` (None when it can)."""
        names = _keyword_arguments(self.signature)
        if names is None or option not in names:
            return f"its constructor takes no {option!r} keyword argument"
        if self.factory is None:
            return (
                f"it was given as an instance without an 'hparams' mapping, so it cannot be rebuilt with "
                f"another {option}; pass the class or the registered name, or give the instance "
                "'hparams' (its constructor's keyword arguments)"
            )
        return None

    def skip(self, invariant: str, reason: str, *, loud: bool = False) -> None:
        """Record that ``invariant`` was not checked, and why; ``loud``: also name it in the warning."""
        self.report.skipped[invariant] = reason
        if loud:
            self._loud.append(invariant)

    def skip_unless_buildable(self, invariant: str, option: str) -> bool:
        """Skip ``invariant`` and return True when the plugin cannot be built with ``option``."""
        reason = self.why_not(option)
        if reason is None:
            return False
        takes_it = option in (_keyword_arguments(self.signature) or ())
        self.skip(invariant, reason, loud=self.factory is None and takes_it)
        return True

    def passed(self, invariant: str) -> None:
        """Record that ``invariant`` held."""
        self.report.checked.append(invariant)

    def finish(self) -> ConformanceReport:
        """Warn about skips caused by passing an instance; return the report."""
        if self._loud:
            warnings.warn(
                f"{self.report.plugin}: given as an instance that cannot be rebuilt, so "
                f"{len(self._loud)} check(s) did not run: {'; '.join(self._loud)}. Pass the class or the "
                "registered name, or give the instance an 'hparams' mapping of its constructor's "
                "keyword arguments (see ConformanceReport.skipped)",
                ConformanceWarning,
                stacklevel=3,
            )
        return self.report


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
    hparams = getattr(plugin, "hparams", None)
    if isinstance(hparams, Mapping):
        cls, base = type(plugin), dict(hparams)
        return Subject(kind, cls.__name__, lambda **options: cls(**{**base, **options}), plugin, cls)
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
    subject.passed(invariant)


def check_once(subject: Subject, invariant: str, check: Callable[[], None]) -> None:
    """Run a deterministic check; raise :class:`ConformanceError` naming the invariant on failure."""
    try:
        check()
    except Exception as exc:  # noqa: BLE001
        raise ConformanceError(
            f"{subject.kind} {subject.name!r} breaks the invariant '{invariant}': {type(exc).__name__}: {exc}"
        ) from exc
    subject.passed(invariant)
