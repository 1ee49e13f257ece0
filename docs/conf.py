"""Sphinx configuration for contrastive-kit."""

from __future__ import annotations

import contrastive

project = "contrastive"
author = "contrastive developers"
release = version = contrastive.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
nitpicky = True
html_theme = "furo" if __import__("importlib").util.find_spec("furo") else "alabaster"
