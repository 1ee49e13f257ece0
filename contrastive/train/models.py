"""Small encoders and SimCLR's projection head for the reference trainer."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ContrastiveModel", "ProjectionHead", "build_model", "mlp_encoder", "small_cnn"]


def small_cnn(channels: int, feature_dim: int, width: int = 16) -> nn.Sequential:
    """Three 3x3 conv-BN-ReLU blocks (width, 2w, 4w; max-pool after the second), global pool, linear."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1),
        nn.BatchNorm2d(4 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, feature_dim),
    )


def mlp_encoder(in_dim: int, feature_dim: int, hidden: int = 128) -> nn.Sequential:
    """A two-layer MLP ``in_dim -> hidden -> feature_dim`` with batch norm and ReLU."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, feature_dim)
    )


class ProjectionHead(nn.Sequential):
    """SimCLR's projection head g (Chen et al. 2020): MLP with one hidden layer, ``z = W2 relu(W1 h)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        """Map ``in_dim`` features through ``hidden_dim`` to ``out_dim``."""
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class ContrastiveModel(nn.Module):
    """An encoder f and a projection head g: ``forward(x)`` is ``g(f(x))``; probes use ``encoder(x)``."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        """Hold the ``encoder`` and the projection ``head``."""
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projections ``z = g(f(x))`` the loss sees."""
        return self.head(self.encoder(x))


def build_model(
    kind: str, sample_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, projection_dim: int
) -> ContrastiveModel:
    """An encoder of ``kind`` (cnn, mlp, linear) for inputs of ``sample_shape``, with a projection head."""
    if kind == "cnn":
        if len(sample_shape) != 3:
            raise ValueError(f"the cnn encoder takes (C, H, W) images, got samples of shape {sample_shape}")
        encoder: nn.Module = small_cnn(sample_shape[0], feature_dim)
    elif kind in ("mlp", "linear"):
        in_dim = 1
        for s in sample_shape:
            in_dim *= s
        layer = (
            mlp_encoder(in_dim, feature_dim) if kind == "mlp" else nn.Linear(in_dim, feature_dim, bias=False)
        )
        encoder = layer if len(sample_shape) == 1 else nn.Sequential(nn.Flatten(), layer)
    else:
        raise ValueError(f"encoder must be cnn, mlp or linear, got {kind!r}")
    return ContrastiveModel(encoder, ProjectionHead(feature_dim, hidden_dim, projection_dim))
