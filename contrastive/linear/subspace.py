"""Distances between linear subspaces."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = ["orthonormal_basis", "sin_theta_distance"]


def orthonormal_basis(basis: Any, name: str = "basis") -> np.ndarray:
    """Return a (d, k) matrix with orthonormal columns spanning the columns of the (d, k) ``basis``."""
    a = _as_matrix(basis, name)
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    tol = (s[0] if s.size else 0.0) * max(a.shape) * np.finfo(np.float64).eps
    rank = int((s > tol).sum())
    if rank < a.shape[1]:
        raise ValueError(
            f"{name} must have linearly independent columns, got shape {a.shape} with rank {rank}"
        )
    return u


def sin_theta_distance(U: Any, V: Any, norm: Literal["fro", "spectral"] = "fro") -> float:
    r"""Sin-theta distance between the column spans of ``U`` (d, r1) and ``V`` (d, r2).

    With orthonormal bases and projectors :math:`P_U = UU^\top`, :math:`P_V = VV^\top`:
    ``norm="fro"`` gives :math:`\|\sin\Theta(U, V)\|_F = \|P_U - P_V\|_F/\sqrt{2}`
    (:math:`\sqrt{r - \|U^\top V\|_F^2}` when both have dimension r), and
    ``norm="spectral"`` gives :math:`\|P_U - P_V\|_2`, the sine of the largest
    principal angle. Columns need not be orthonormal, only independent; to
    compare with an estimator's ``components_`` (k, d), pass ``components_.T``.
    """
    u = orthonormal_basis(U, "U")
    v = orthonormal_basis(V, "V")
    if u.shape[0] != v.shape[0]:
        raise ValueError(
            f"U and V must live in the same ambient dimension (rows), got {u.shape[0]} and {v.shape[0]}"
        )
    if norm == "fro":
        # ||P_U - P_V||_F^2 = ||(I - P_U) V||_F^2 + ||(I - P_V) U||_F^2; residuals keep small angles accurate.
        cross = u.T @ v
        residual = np.square(v - u @ cross).sum() + np.square(u - v @ cross.T).sum()
        return float(np.sqrt(0.5 * residual))
    if norm == "spectral":
        diff = u @ u.T - v @ v.T
        return float(np.linalg.norm(diff, ord=2))
    raise ValueError(f"norm must be 'fro' or 'spectral', got norm={norm!r}")


def _as_matrix(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    m = np.asarray(a, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[1] == 0 or m.shape[0] < m.shape[1]:
        raise ValueError(f"{name} must be a (d, k) matrix of k <= d basis columns, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} must be finite, got non-finite entries")
    return m
