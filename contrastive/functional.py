"""Functional twins of the engine-based losses: ``loss(*inputs, **options)`` without a module."""

from contrastive.engine import row_stats
from contrastive.losses.clip import clip_loss as clip
from contrastive.losses.infonce import infonce_loss as infonce
from contrastive.losses.nt_xent import nt_xent_loss as nt_xent
from contrastive.losses.supcon import supcon_loss as supcon

__all__ = ["clip", "infonce", "nt_xent", "row_stats", "supcon"]
