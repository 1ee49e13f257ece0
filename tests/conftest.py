"""Shared pytest configuration: hypothesis profiles and warnings policy."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

# Without a GPU, Triton kernels run on the CPU through Triton's interpreter. The variable
# must be set before triton is first imported; the engine imports triton lazily.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# `ci` is fast and deterministic (the default); `nightly` searches deeper.
# Select with HYPOTHESIS_PROFILE=nightly pytest ...
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
