"""The three kinds of plugin: what a factory of each must build, and the messages that name a plugin."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any

import torch

_PLURAL = {"loss": "losses", "sampler": "samplers", "augmentation": "augmentations"}

#: kind -> (what an object of that kind is not when it fails the check, what a factory must return)
_PROMISE = {
    "loss": ("a torch.nn.Module", "a torch.nn.Module, called as loss(*views, labels=None)"),
    "sampler": ("a contrastive.Sampler", "an instance of a contrastive.Sampler subclass"),
    "augmentation": ("callable", "a callable augmentation, aug(x, generator=None) -> Tensor"),
}


def describe_failure(exc: BaseException) -> str:
    """A plugin's failure in one line: the exception's type and message."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a class or function (else its type's name)."""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None)
    return f"{module}.{name}" if module else name


def checked(kind: str, made: Any, origin: str) -> Any:
    """``made`` if it is an object of ``kind``, else a :exc:`TypeError` saying who returned what."""
    if kind == "loss":
        ok = isinstance(made, torch.nn.Module)
    elif kind == "sampler":
        from contrastive.samplers.base import Sampler  # here: contrastive.samplers imports the registry

        ok = isinstance(made, Sampler)
    else:
        ok = callable(made)
    if ok:
        return made
    is_not, must = _PROMISE[kind]
    raise TypeError(
        f"{origin} returned {reprlib.repr(made)} (a {qualified_name(type(made))}), not {is_not}; "
        f"a {kind} factory must return {must}"
    )


def unknown_message(kind: str, name: str, available: list[str]) -> str:
    """The error for an unknown name: close matches first, then everything that is registered."""
    plural = _PLURAL[kind]
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(available) if available else "none are registered"
    return f"unknown {kind} {name!r}{hint} Available {plural}: {listing}."
