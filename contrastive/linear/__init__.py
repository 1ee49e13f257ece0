"""Linear contrastive learning (Ji et al.): spiked covariance data, subspace distances, the estimator."""

from contrastive.linear.data import noise_profile, spiked_covariance
from contrastive.linear.estimator import (
    LinearContrastive,
    NotFittedError,
    masked_contrastive_matrix,
)
from contrastive.linear.subspace import orthonormal_basis, sin_theta_distance

__all__ = [
    "LinearContrastive",
    "NotFittedError",
    "masked_contrastive_matrix",
    "noise_profile",
    "orthonormal_basis",
    "sin_theta_distance",
    "spiked_covariance",
]
