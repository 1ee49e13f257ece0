"""The documentation builds with warnings as errors and has an anchor for every public name.

The test builds the HTML documentation into a temporary folder (``sphinx-build -W -n``)
and reads the object inventory it writes. Without Sphinx it is skipped locally, but
fails under ``CI=true``: the docs are part of what CI checks.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import contrastive

pytestmark = pytest.mark.slow  # builds the documentation (about 10 s of CPU)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The public submodules; each must have a module anchor and one per name it exports.
PUBLIC_SUBMODULES = (
    "contrastive.functional",
    "contrastive.gradcache",
    "contrastive.metrics",
    "contrastive.linear",
    "contrastive.testing",
    "contrastive.testing.strategies",
    "contrastive.samplers",
    "contrastive.augment",
    "contrastive.engine",
    "contrastive.train",
    "contrastive.registry",
    "contrastive.hookspecs",
    "contrastive.errors",
    "contrastive.distributed",
)

_LINE = re.compile(
    r"(?P<name>.+?)\s+(?P<domain>[^\s:]+):(?P<role>\S+)\s+(?P<prio>-?\d+)\s+(?P<uri>\S*)\s+(?P<disp>.*)"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def read_inventory(path: Path) -> dict[str, str]:
    """Parse a Sphinx ``objects.inv`` (format 2): ``{full name: "domain:role"}``."""
    raw = path.read_bytes()
    header_end = 0
    for _ in range(4):  # four text lines, then the zlib-compressed body
        header_end = raw.index(b"\n", header_end) + 1
    assert raw.startswith(b"# Sphinx inventory version 2"), f"{path} is not a version 2 inventory"
    entries: dict[str, str] = {}
    for line in zlib.decompress(raw[header_end:]).decode("utf-8").splitlines():
        match = _LINE.fullmatch(line.strip())
        if match:
            entries.setdefault(match["name"], f"{match['domain']}:{match['role']}")
    return entries


#: The HTML build of this test session, shared by every test that reads built pages.
_BUILT: dict[str, Path] = {}


def build_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the HTML docs once per session with warnings as errors; return the output folder."""
    if "html" in _BUILT:
        return _BUILT["html"]
    missing = [name for name in ("sphinx", "furo") if importlib.util.find_spec(name) is None]
    if missing or not (DOCS / "conf.py").is_file():
        message = (
            f"{' and '.join(missing)} not installed (pip install -e '.[docs]' builds the documentation)"
            if missing
            else f"no documentation sources in {DOCS} (a source distribution?)"
        )
        if _in_ci():
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    out = tmp_path_factory.mktemp("docs-html")
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-W",
        "-n",
        "--keep-going",
        "-q",
        "-d",
        str(out / ".doctrees"),
        str(DOCS),
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, (
        f"the documentation does not build cleanly ({' '.join(command)}):\n{result.stderr[-6000:]}"
    )
    _BUILT["html"] = out
    return out


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Build the HTML docs with warnings as errors and return their object inventory."""
    return read_inventory(build_html(tmp_path_factory) / "objects.inv")


def _exported(module_name: str) -> list[str]:
    """The names a module exports, by the same rule the docs extension documents them with."""
    spec = importlib.util.spec_from_file_location("public_aliases", DOCS / "_ext" / "public_aliases.py")
    assert spec is not None and spec.loader is not None
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)  # needs sphinx, like every test here that calls this
    return extension.exported_names(importlib.import_module(module_name))


def test_every_name_in_contrastive_all_has_an_anchor(inventory: dict[str, str]) -> None:
    assert "contrastive" in inventory, "the docs have no anchor for the module contrastive"
    missing = sorted(
        f"contrastive.{name}" for name in contrastive.__all__ if f"contrastive.{name}" not in inventory
    )
    assert not missing, f"public names without an anchor in the API reference: {missing}"


@pytest.mark.parametrize("module_name", PUBLIC_SUBMODULES)
def test_every_public_submodule_and_its_names_have_anchors(
    inventory: dict[str, str], module_name: str
) -> None:
    assert inventory.get(module_name) == "py:module", f"no module anchor for {module_name}"
    missing = sorted(
        f"{module_name}.{name}" for name in _exported(module_name) if f"{module_name}.{name}" not in inventory
    )
    assert not missing, f"names of {module_name} without an anchor in the API reference: {missing}"


def test_the_guides_are_in_the_build(inventory: dict[str, str]) -> None:
    pages = {name for name, kind in inventory.items() if kind == "std:doc"}
    expected = {
        "quickstart",
        "guide/losses",
        "guide/samplers",
        "guide/augmentations",
        "guide/engine",
        "guide/distributed",
        "plugins",
        "theory",
        "api/index",
        "api/losses",
        "guide/migrating",
        "changelog",
    }
    assert expected <= pages, f"pages missing from the documentation: {sorted(expected - pages)}"
