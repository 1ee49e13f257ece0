"""Conformance kit for plugin authors: prove a loss, sampler or augmentation behaves like the built-ins.

::

    from contrastive.testing import check_loss, check_sampler, check_augmentation

    def test_my_plugin_conforms():
        check_loss("my_loss")            # a registered name, a class or an instance
        check_sampler(MySampler)
        check_augmentation(MyAugmentation(p=0.5))

Each check raises :class:`ConformanceError` (an ``AssertionError``) naming the
broken invariant and hypothesis' minimal failing example, and otherwise returns a
:class:`ConformanceReport` of the invariants it checked and those it skipped, with why.
Pass a registered name or a class where you can: an instance can only be rebuilt with
other options (the extreme temperatures) if it has an ``hparams`` mapping of its
constructor's keyword arguments; otherwise those checks are skipped with a
:class:`ConformanceWarning`.
``pytest --contrastive-conformance`` runs the checks on every installed plugin.
:mod:`contrastive.testing.strategies` holds the hypothesis strategies.

Needs ``hypothesis`` (and ``pytest`` for the pytest plugin): ``pip install
"contrastive-kit[kit]"`` installs both and nothing else. They are imported only when
one of these names is first used; without them that use raises an ImportError that
says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from contrastive.testing._requirements import missing_kit_error

if TYPE_CHECKING:
    from contrastive.testing._runner import ConformanceError, ConformanceReport, ConformanceWarning
    from contrastive.testing.augmentation_checks import check_augmentation
    from contrastive.testing.loss_checks import check_loss
    from contrastive.testing.sampler_checks import check_sampler

_LAZY = {
    "ConformanceError": "contrastive.testing._runner",
    "ConformanceReport": "contrastive.testing._runner",
    "ConformanceWarning": "contrastive.testing._runner",
    "check_loss": "contrastive.testing.loss_checks",
    "check_sampler": "contrastive.testing.sampler_checks",
    "check_augmentation": "contrastive.testing.augmentation_checks",
}

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "ConformanceWarning",
    "check_augmentation",
    "check_loss",
    "check_sampler",
]

#: What the kit imports that the library itself does not need (the ``kit`` extra).
_KIT_DEPENDENCIES = ("hypothesis", "pytest")


def __getattr__(name: str) -> Any:
    """Import the checks (and hypothesis) on first use."""
    module = _LAZY.get(name, "contrastive.testing.strategies" if name == "strategies" else None)
    if module is None:
        raise AttributeError(f"module 'contrastive.testing' has no attribute {name!r}")
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _KIT_DEPENDENCIES:
            raise missing_kit_error(exc) from exc
        raise
    return imported if name == "strategies" else getattr(imported, name)
