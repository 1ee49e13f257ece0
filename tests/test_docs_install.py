"""Install instructions work before the first release, and the release checklist covers the steps."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = (ROOT / "README.md", ROOT / "docs" / "quickstart.rst")


def _unreleased() -> bool:
    """Whether the changelog's newest entry is still ``(unreleased)``."""
    text = (ROOT / "docs" / "changelog.rst").read_text()
    heading = re.search(r"^\d+\.\d+\.\d+ \(([^)]*)\)$", text, flags=re.M)
    assert heading is not None, "docs/changelog.rst has no 'X.Y.Z (date)' entry"
    return heading[1] == "unreleased"


def test_install_lines_use_a_checkout_or_the_git_url_until_a_release_exists() -> None:
    if not _unreleased():
        return  # released: `pip install contrastive-kit` works (RELEASING.md step 2 updates the docs)
    for path in INSTRUCTIONS:
        if not path.is_file():  # a source distribution ships the README but not the docs
            continue
        text = path.read_text()
        index_install = r"pip install \"?contrastive-kit(?:\[[\w,]+\])?\"?(?=[ \t]*(?:#|$|&&))"
        from_index = re.findall(index_install, text, re.M)
        assert not from_index, f"{path.name} installs from the package index before a release: {from_index}"
        assert "git+https://" in text, f"{path.name} does not show the install from the git URL"
        assert re.search(r"pip install (-e )?\"?\.(\[[\w,]+\])?\"?", text), (
            f"{path.name}: no checkout install"
        )


def test_the_plugin_author_install_is_the_light_kit_extra() -> None:
    for path in (*INSTRUCTIONS, ROOT / "docs" / "plugins.rst"):
        if path.is_file():
            assert "[kit]" in path.read_text(), f"{path.name} does not name the 'kit' extra"


def test_the_release_checklist_covers_version_build_and_twine_check() -> None:
    text = (ROOT / "RELEASING.md").read_text()
    for step in (
        "contrastive/_version.py",
        "docs/changelog.rst",
        "python -m build",
        "twine check",
        ".whl",
        ".tar.gz",
    ):
        assert step in text, f"RELEASING.md does not mention {step!r}"
