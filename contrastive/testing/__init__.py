"""Conformance kit for plugin authors: prove a loss, sampler or augmentation behaves like the built-ins.

::

    from contrastive.testing import check_loss, check_sampler, check_augmentation

    def test_my_plugin_conforms():
        check_loss("my_loss")            # a registered name, a class or an instance
        check_sampler(MySampler)
        check_augmentation(MyAugmentation(p=0.5))

Each check raises :class:`ConformanceError` (an ``AssertionError``) naming the
broken invariant and hypothesis' minimal failing example.
``pytest --contrastive-conformance`` runs the checks on every installed plugin.
:mod:`contrastive.testing.strategies` holds the hypothesis strategies.

Needs ``hypothesis`` (``pip install contrastive-kit[test]``); it is imported
only when one of these names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contrastive.testing._runner import ConformanceError
    from contrastive.testing.augmentation_checks import check_augmentation
    from contrastive.testing.loss_checks import check_loss
    from contrastive.testing.sampler_checks import check_sampler

_LAZY = {
    "ConformanceError": "contrastive.testing._runner",
    "check_loss": "contrastive.testing.loss_checks",
    "check_sampler": "contrastive.testing.sampler_checks",
    "check_augmentation": "contrastive.testing.augmentation_checks",
}

__all__ = ["ConformanceError", "check_augmentation", "check_loss", "check_sampler"]


def __getattr__(name: str) -> Any:
    """Import the checks (and hypothesis) on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "strategies":
        return importlib.import_module("contrastive.testing.strategies")
    raise AttributeError(f"module 'contrastive.testing' has no attribute {name!r}")
