"""Batched augmentations that run on the tensor's device.

Each image augmentation draws per-sample parameters (``sample_params``) and applies them
deterministically (``apply``); ``aug(x, generator)`` does both, ``aug.views(x, n)``
returns ``n`` independent views.
"""

from contrastive.augment.base import Augmentation, RandomAugmentation, as_generator
from contrastive.augment.blur import BlurParams, GaussianBlur
from contrastive.augment.coin import CoinAugmentation, CoinParams
from contrastive.augment.color import RandomGrayscale, Solarize
from contrastive.augment.crop import CropParams, RandomResizedCrop
from contrastive.augment.flip import HorizontalFlip
from contrastive.augment.jitter import ColorJitter, JitterParams
from contrastive.augment.pipelines import Compose, SimCLRAugmentation

__all__ = [
    "Augmentation",
    "BlurParams",
    "CoinAugmentation",
    "CoinParams",
    "ColorJitter",
    "Compose",
    "CropParams",
    "GaussianBlur",
    "HorizontalFlip",
    "JitterParams",
    "RandomAugmentation",
    "RandomGrayscale",
    "RandomResizedCrop",
    "SimCLRAugmentation",
    "Solarize",
    "as_generator",
]
