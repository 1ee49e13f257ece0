"""Hook specifications: the three ways a plugin adds to contrastive.

A plugin is any module (or object) with functions marked ``@contrastive.hookimpl``
whose names match the specifications below. Each hook receives a ``register``
callback::

    from contrastive import hookimpl

    @hookimpl
    def register_losses(register):
        register("my_loss", MyLoss)              # a class or any factory
        register("nt_xent", MyNTXent, override=True)  # replace an existing name

What a factory builds is checked when it is built (:func:`contrastive.get_loss` and its
siblings): a loss must be a :class:`torch.nn.Module`, a sampler a :class:`contrastive.Sampler`,
an augmentation callable; anything else is a :exc:`TypeError` that names the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

PROJECT_NAME = "contrastive"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback a hook receives: ``register(name, factory, override=False)``."""

    def __call__(self, name: str, factory: Callable[..., Any], *, override: bool = False) -> None:
        """Register ``factory`` (a class or callable returning the plugin) under ``name``."""


@hookspec
def register_losses(register: Register) -> None:
    """Register loss factories (``torch.nn.Module`` subclasses or callables returning one)."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register sampler factories (:class:`contrastive.Sampler` subclasses, or callables returning one)."""


@hookspec
def register_augmentations(register: Register) -> None:
    """Register augmentation factories (classes or callables building ``aug(x, generator=None)``)."""
