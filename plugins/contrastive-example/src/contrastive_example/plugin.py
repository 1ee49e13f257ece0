"""The module named by the ``contrastive`` entry point: it registers this package's plugins."""

from __future__ import annotations

from contrastive import hookimpl
from contrastive_example.augmentation import GaussianNoise
from contrastive_example.loss import AlignUniformLoss
from contrastive_example.sampler import TemperedSampler


@hookimpl
def register_losses(register):  # type: ignore[no-untyped-def]
    """Register the example loss."""
    register("align_uniform", AlignUniformLoss)


@hookimpl
def register_samplers(register):  # type: ignore[no-untyped-def]
    """Register the example sampler."""
    register("example_tempered", TemperedSampler)


@hookimpl
def register_augmentations(register):  # type: ignore[no-untyped-def]
    """Register the example augmentation."""
    register("gaussian_noise", GaussianNoise)
