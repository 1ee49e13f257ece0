"""Sphinx extension: turn the committed benchmark results into reStructuredText at build time.

``benchmarks/results/<name>.md`` becomes ``docs/_generated/<name>.rst`` (title as a rubric,
paragraphs, bullet lists, literal blocks and pipe tables as ``list-table``), and a
``benchmarks/results/<name>.png`` next to it is copied and shown under the table. Pages
include them with ``.. include:: /_generated/<name>.rst``, so the documentation always
shows the numbers that are committed, and a plot appears as soon as its file exists.

The converter understands the small subset of Markdown the benchmark scripts write; a
results file it cannot read fails the build with the line it stopped at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

_LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")
_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def inline(text: str) -> str:
    """Markdown inline markup to reStructuredText: code spans and links (bold is the same)."""
    text = _CODE.sub(lambda m: f"``{m.group(1)}``", text)
    return _LINK.sub(lambda m: f"`{m.group(1)} <{m.group(2)}>`__", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(rows: list[str]) -> list[str]:
    header, rule, *body = rows
    if not re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)*\s*:?-{3,}:?\s*\|?", rule.strip()):
        raise ValueError(f"expected a table rule after the header, got {rule!r}")
    width = len(_cells(header))
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *body]:
        cells = _cells(row)
        if len(cells) != width:
            raise ValueError(f"table row has {len(cells)} cells, the header {width}: {row!r}")
        for i, cell in enumerate(cells):
            out.append(f"   {'* -' if i == 0 else '  -'} {inline(cell) or ' '}")
    return [*out, ""]


def markdown_to_rst(text: str) -> str:
    """Convert the Markdown subset of the results files to reStructuredText."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            out += [f".. rubric:: {inline(line.lstrip('#').strip())}", ""]
            i += 1
        elif line.lstrip().startswith("|"):
            start = i
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                i += 1
            out += _table(lines[start:i])
        elif line.startswith("    "):
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["::", "", *("   " + b[4:] if b.strip() else "" for b in block), ""]
        elif re.match(r"[-*] ", line):
            while i < len(lines) and re.match(r"[-*] ", lines[i]):
                item = [lines[i][2:].strip()]
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                    item.append(lines[i].strip())
                    i += 1
                out.append("* " + inline(" ".join(item)))
            out.append("")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(("|", "#")):
                para.append(lines[i].strip())
                i += 1
            out += [inline(" ".join(para)), ""]
    return "\n".join(out) + "\n"


def generate(app: Sphinx) -> None:
    """Write ``_generated/<name>.rst`` for every results file (and copy its plot, if any)."""
    target = Path(app.srcdir) / "_generated"
    target.mkdir(exist_ok=True)
    for old in target.iterdir():
        old.unlink()
    for md in sorted(RESULTS.glob("*.md")):
        try:
            rst = markdown_to_rst(md.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ExtensionError(f"cannot convert {md}: {exc}") from exc
        png = md.with_suffix(".png")
        if png.is_file():
            shutil.copyfile(png, target / png.name)
            rst += f"\n.. image:: /_generated/{png.name}\n   :alt: {md.stem} plot\n   :width: 100%\n"
        (target / f"{md.stem}.rst").write_text(rst, encoding="utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the generator to run before the sources are read."""
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
