"""Similarity engine: row statistics of z·cᵀ/τ without the N x N matrix."""
