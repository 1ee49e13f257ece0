"""Build throwaway third-party plugins that are found through real entry points.

Each plugin is a module file plus a ``*.dist-info`` folder (``METADATA`` and
``entry_points.txt``) in a directory put on ``sys.path``, exactly what pip
leaves behind, so discovery goes through ``importlib.metadata``.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import contrastive
from contrastive import registry

_counter = itertools.count()

#: The environment variables the registry reads; every registry test starts without them.
ENV_VARS = (
    "CONTRASTIVE_PLUGINS",
    "CONTRASTIVE_STRICT_PLUGINS",
    "CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD",
)

LOSS_PLUGIN = """
import torch
from contrastive import hookimpl

class {cls}(torch.nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, *views, labels=None):
        return self.scale * sum((v * v).mean() for v in views)

@hookimpl
def register_losses(register):
    register({name!r}, {cls}{override})
"""


class PluginFactory:
    """Writes plugin distributions into one directory that is on ``sys.path``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def make(
        self,
        dist: str,
        source: str,
        *,
        entry_name: str | None = None,
        version: str = "1.0.0",
        root: Path | None = None,
    ) -> str:
        """Create distribution ``dist`` whose entry point loads a module with ``source``."""
        root = root or self.root
        module = f"ctk_test_{dist.replace('-', '_')}_{next(_counter)}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(
            f"[contrastive]\n{entry_name or dist} = {module}\n"
        )
        self.modules.append(module)
        return module

    def loss_plugin(self, dist: str, loss_name: str, *, override: bool = False, **kw: object) -> str:
        """A plugin registering one small loss under ``loss_name``."""
        cls = f"Loss{next(_counter)}"
        source = LOSS_PLUGIN.format(
            cls=cls, name=loss_name, override=", override=True" if override else ""
        )
        return self.make(dist, source, **kw)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        """Forget the imported test modules."""
        for module in self.modules:
            sys.modules.pop(module, None)


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginFactory]:
    """A plugin factory on sys.path, a clean environment and a fresh registry (before and after)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    made = PluginFactory(tmp_path)
    registry.reset()
    yield made
    made.cleanup()
    registry.reset()


def info(name: str) -> contrastive.PluginInfo:
    """The plugin record called ``name``."""
    matches = [i for i in contrastive.plugins() if i.name == name]
    assert len(matches) == 1, [i.name for i in contrastive.plugins()]
    return matches[0]
