"""Similarity engine: row statistics of z·cᵀ/τ without the N x N matrix."""

from contrastive.engine.dispatch import BACKENDS, dual_row_stats, resolve_backend, row_stats
from contrastive.engine.reference import reference_row_stats
from contrastive.engine.stats import RowStats

__all__ = ["BACKENDS", "RowStats", "dual_row_stats", "reference_row_stats", "resolve_backend", "row_stats"]
