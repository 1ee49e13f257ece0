"""The built documentation works without network: no remote script, style sheet or font, and math renders.

The pages are read from the HTML build that tests/test_docs.py makes (once per session).
CI also checks its own build: ``python -m tests.test_docs_offline docs/_build/html``
(a line of .ci/run) prints every remote reference and exits 1 if there is one.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.test_docs import build_html

pytestmark = pytest.mark.slow  # needs the documentation build

#: A URL that the browser would fetch from the network (http, https or protocol-relative).
_REMOTE = re.compile(r"^\s*(?:https?:)?//", re.I)
#: ``url(...)`` and ``@import`` in style sheets.
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""", re.I)


class _Resources(HTMLParser):
    """Collect what a page loads by itself: scripts, style sheets, icons, images, frames, media."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.inline_css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("script", "img", "iframe", "audio", "video", "source", "embed") and a.get("src"):
            self.loaded.append(a["src"])
        if tag == "link" and a.get("href"):
            rel = a.get("rel", "").lower().split()
            if {"stylesheet", "icon", "preload", "modulepreload", "manifest"} & set(rel):
                self.loaded.append(a["href"])
        if a.get("style"):
            self.inline_css.append(a["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.inline_css.append(data)


def _css_urls(text: str) -> list[str]:
    return [a or b for a, b in _CSS_URL.findall(text)]


def remote_references(html_dir: Path) -> list[str]:
    """Every remote resource the built pages and their style sheets would load, as ``file: url``."""
    found: list[str] = []
    for page in sorted(html_dir.rglob("*.html")):
        parser = _Resources()
        parser.feed(page.read_text(encoding="utf-8"))
        urls = parser.loaded + [u for css in parser.inline_css for u in _css_urls(css)]
        found += [f"{page.relative_to(html_dir)}: {u}" for u in urls if _REMOTE.match(u)]
    for sheet in sorted(html_dir.rglob("*.css")):
        urls = _css_urls(sheet.read_text(encoding="utf-8", errors="replace"))
        found += [f"{sheet.relative_to(html_dir)}: {u}" for u in urls if _REMOTE.match(u)]
    return found


def math_without_local_renderer(html_dir: Path) -> list[str]:
    """Pages with math whose MathJax script is not a file of the build (or is missing)."""
    bad: list[str] = []
    for page in sorted(html_dir.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        if 'class="math' not in text:
            continue
        parser = _Resources()
        parser.feed(text)
        mathjax = [src for src in parser.loaded if "mathjax" in src.lower()]
        local = [src for src in mathjax if (page.parent / src.split("?")[0]).is_file()]
        if not local:
            bad.append(f"{page.relative_to(html_dir)}: MathJax scripts {mathjax or 'none'}")
    return bad


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML build of this session."""
    return build_html(tmp_path_factory)


def test_the_built_pages_load_nothing_from_the_network(html: Path) -> None:
    remote = remote_references(html)
    assert not remote, "the built documentation loads remote resources:\n" + "\n".join(remote[:40])


def test_every_page_with_math_loads_mathjax_from_the_build(html: Path) -> None:
    pages_with_math = [p for p in html.rglob("*.html") if 'class="math' in p.read_text(encoding="utf-8")]
    assert len(pages_with_math) >= 5, "expected math on the losses, engine, theory and API pages"
    assert {"theory.html", "losses.html"} <= {p.name for p in pages_with_math}
    bad = math_without_local_renderer(html)
    assert not bad, "pages whose math would not render offline:\n" + "\n".join(bad)
    fonts = list((html / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff*"))
    assert fonts, "MathJax's CHTML fonts are not in the build"


def test_the_checker_finds_remote_scripts_styles_and_fonts(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        '<html><head><script src="https://cdn.example.org/mathjax.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/f.css">'
        '<link rel="next" href="https://example.org/next.html">'  # a link, loads nothing
        '<style>@import "https://example.org/x.css";</style></head>'
        '<body><a href="https://example.org">a link</a><span class="math">x</span></body></html>'
    )
    (tmp_path / "s.css").write_text("@font-face { src: url('https://example.org/f.woff2') }")
    assert remote_references(tmp_path) == [
        "page.html: https://cdn.example.org/mathjax.js",
        "page.html: //fonts.example.org/f.css",
        "page.html: https://example.org/x.css",
        "s.css: https://example.org/f.woff2",
    ]
    assert math_without_local_renderer(tmp_path) == [
        "page.html: MathJax scripts ['https://cdn.example.org/mathjax.js']"
    ]


def main(argv: list[str]) -> int:
    """Check a built HTML folder (``python -m tests.test_docs_offline docs/_build/html``)."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m tests.test_docs_offline HTML_DIR", file=sys.stderr)
        return 2
    html_dir = Path(argv[0])
    problems = remote_references(html_dir) + math_without_local_renderer(html_dir)
    for line in problems:
        print(f"offline docs: {line}", file=sys.stderr)
    print(f"offline docs: {len(problems)} problem(s) in {html_dir}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
