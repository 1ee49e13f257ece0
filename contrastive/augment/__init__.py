"""Batched augmentations that run on the tensor's device."""
