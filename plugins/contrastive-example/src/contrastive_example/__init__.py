"""contrastive-example: a template plugin package for contrastive-kit."""

from contrastive_example.augmentation import GaussianNoise
from contrastive_example.loss import AlignUniformLoss
from contrastive_example.sampler import TemperedSampler

__all__ = ["AlignUniformLoss", "GaussianNoise", "TemperedSampler"]
__version__ = "0.1.0"
