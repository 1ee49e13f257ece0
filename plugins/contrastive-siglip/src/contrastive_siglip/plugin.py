"""The module named by the ``contrastive`` entry point: registers ``siglip``."""

from __future__ import annotations

from contrastive import hookimpl
from contrastive_siglip.loss import SigLipLoss


@hookimpl
def register_losses(register):  # type: ignore[no-untyped-def]
    """Register the SigLIP loss."""
    register("siglip", SigLipLoss)
