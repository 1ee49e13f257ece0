"""The pytest plugin (entry point ``pytest11``): ``--contrastive-conformance`` and a fixture.

``pytest --contrastive-conformance`` adds one test per installed loss, sampler and
augmentation, each running the matching check of :mod:`contrastive.testing`.
The ``contrastive_conformance`` fixture gives plugin authors the checks in their
own tests. This module imports neither hypothesis nor the plugins until used,
since pytest loads it in every session where contrastive-kit is installed.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

_KINDS = ("loss", "sampler", "augmentation")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--contrastive-conformance``."""
    group = parser.getgroup("contrastive", "contrastive plugin conformance")
    group.addoption(
        "--contrastive-conformance",
        action="store_true",
        default=False,
        help="check every installed contrastive loss, sampler and augmentation with the conformance kit",
    )


class ConformanceItem(pytest.Item):
    """One conformance check of one registered plugin."""

    def __init__(self, *, kind: str, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind, self.target = kind, target

    def runtest(self) -> None:
        """Run the kind's check on the registered name."""
        import contrastive.testing as kit

        getattr(kit, f"check_{self.kind}")(self.target)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """Show the kit's message, which names the invariant and the minimal example."""
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        """Where pytest says the item comes from."""
        return self.path, None, self.name


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so they apply to these items too
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Append one item per installed plugin name when ``--contrastive-conformance`` is given."""
    if not config.getoption("contrastive_conformance"):
        return
    import contrastive

    listing = {
        "loss": contrastive.list_losses(),
        "sampler": contrastive.list_samplers(),
        "augmentation": contrastive.list_augmentations(),
    }
    for kind in _KINDS:
        for name in listing[kind]:
            items.append(
                ConformanceItem.from_parent(
                    session, name=f"contrastive-conformance[{kind}:{name}]", kind=kind, target=name
                )
            )


@pytest.fixture
def contrastive_conformance() -> SimpleNamespace:
    """The conformance checks: ``contrastive_conformance.check_loss(...)`` and friends."""
    import contrastive.testing as kit

    return SimpleNamespace(
        check_loss=kit.check_loss,
        check_sampler=kit.check_sampler,
        check_augmentation=kit.check_augmentation,
        ConformanceError=kit.ConformanceError,
    )
