"""Sphinx extension: document re-exports of top-level names once, with an anchor in each module.

Many names of :mod:`contrastive` are also exported by a submodule (``contrastive.samplers
.DebiasedSampler`` is ``contrastive.DebiasedSampler``). Documenting the object twice would
repeat its docstring and make autodoc register its defining path twice. Instead:

* ``automodule`` skips module members that are the same object as a public top-level name
  (the ``autodoc-skip-member`` handler below), and
* ``.. public-aliases:: contrastive.samplers`` writes, for each such member, a short entry
  with its own anchor (``contrastive.samplers.DebiasedSampler``) that links to the full
  description under ``contrastive``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

TOP = "contrastive"


def top_level_names() -> dict[int, str]:
    """id(object) -> its public name in ``contrastive`` (modules excluded)."""
    top = importlib.import_module(TOP)
    return {
        id(getattr(top, name)): name
        for name in top.__all__
        if not inspect.ismodule(getattr(top, name)) and not name.startswith("_")
    }


def exported_names(module: Any) -> list[str]:
    """A module's ``__all__``, else its public functions and classes defined in it."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    ]


def _kind(obj: Any) -> tuple[str, str]:
    if inspect.isclass(obj):
        return ("exception", "exc") if issubclass(obj, BaseException) else ("class", "class")
    if callable(obj) and (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return "function", "func"
    return "data", "data"


class PublicAliases(SphinxDirective):
    """``.. public-aliases:: module``: an anchored entry per member that is a top-level public name."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """Emit one short ``py:`` description per re-exported top-level name."""
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        public = top_level_names()
        lines: list[str] = []
        for name in exported_names(module):
            obj = getattr(module, name)
            top_name = public.get(id(obj))
            if top_name is None:
                continue
            directive, role = _kind(obj)
            lines += [
                f".. py:{directive}:: {name}",
                f"   :module: {module_name}",
                "",
                f"   The same object as :py:{role}:`{TOP}.{top_name}`; documented there.",
                "",
            ]
        if not lines:
            return []
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=f"<public-aliases {module_name}>"), 0, container)
        return container.children


def skip_top_level(app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """Skip a module member that is a public top-level name (it is documented under ``contrastive``)."""
    if what == "module" and not inspect.ismodule(obj) and id(obj) in top_level_names():
        return True
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive and the skip handler."""
    app.add_directive("public-aliases", PublicAliases)
    app.connect("autodoc-skip-member", skip_top_level)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
