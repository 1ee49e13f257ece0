"""contrastive-example: a template plugin package for contrastive-kit."""

from contrastive_example.augmentation import GaussianNoise
from contrastive_example.loss import AlignUniformLoss

__all__ = ["AlignUniformLoss", "GaussianNoise"]
__version__ = "0.1.0"
