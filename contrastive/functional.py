"""Functional twins of the losses: ``loss(*inputs, **options)`` without a module.

Each function has the registry name of its loss and computes exactly what the
module of that name computes (the modules call these functions). Two building blocks
sit beside them: :func:`row_stats` (the engine) and :func:`unit_rows`, the scale-safe row
normalisation every built-in loss uses, for plugins that must pass the same conformance
checks (fp16 zero rows, scale invariance).
"""

from contrastive.engine import row_stats
from contrastive.losses.clip import clip_loss as clip
from contrastive.losses.dcl import dcl_loss as dcl
from contrastive.losses.infonce import infonce_loss as infonce
from contrastive.losses.base import unit_rows
from contrastive.losses.linear_spectral import linear_spectral_contrastive_loss as linear_spectral
from contrastive.losses.nt_xent import nt_xent_loss as nt_xent
from contrastive.losses.spectral import spectral_contrastive_loss as spectral
from contrastive.losses.supcon import supcon_loss as supcon

__all__ = ["clip", "dcl", "infonce", "linear_spectral", "nt_xent", "row_stats", "spectral", "supcon", "unit_rows"]
