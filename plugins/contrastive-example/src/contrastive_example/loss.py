"""The alignment + uniformity loss of Wang & Isola (2020) as a contrastive loss plugin."""

from __future__ import annotations

import torch

from contrastive.functional import unit_rows


class AlignUniformLoss(torch.nn.Module):
    r"""Alignment plus weighted uniformity on the unit sphere (Wang & Isola, ICML 2020).

    .. math::

        \mathcal{L} = \mathbb{E}_{i}\,\lVert f_1(x_i) - f_2(x_i)\rVert_2^{\alpha}
            + \lambda \cdot \tfrac{1}{V}\sum_v \log \mathbb{E}_{i \ne j}\,
              e^{-t \lVert f_v(x_i) - f_v(x_j)\rVert_2^2}

    Args:
        alpha: exponent of the alignment distance (2 in the paper).
        t: scale of the Gaussian potential in the uniformity term (2 in the paper).
        weight: :math:`\lambda`, the weight of the uniformity term.
    """

    #: The views are L2-normalised first (the loss lives on the unit sphere), so the loss is
    #: invariant to their scale; the conformance kit checks that when this is True.
    normalize = True

    def __init__(self, alpha: float = 2.0, t: float = 2.0, weight: float = 1.0) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        if t <= 0:
            raise ValueError(f"t must be > 0, got {t!r}")
        self.alpha, self.t, self.weight = float(alpha), float(t), float(weight)

    def forward(self, *views: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Alignment between consecutive views plus uniformity of each view."""
        if len(views) < 2:
            raise ValueError(f"views: need at least 2 views, got {len(views)}")
        if labels is not None:
            raise ValueError("labels: AlignUniformLoss is self-supervised and takes no labels")
        shape = views[0].shape
        if views[0].ndim != 2 or shape[0] < 2 or any(v.shape != shape for v in views):
            shapes = [tuple(v.shape) for v in views]
            raise ValueError(f"views: expected equal (B >= 2, D) shapes, got {shapes}")
        if not all(bool(torch.isfinite(v).all()) for v in views):
            raise ValueError("views: embeddings contain NaN or Inf")
        dtype = views[0].dtype
        work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype  # pdist needs float32+
        z = [unit_rows(v.to(work)) for v in views]
        align = torch.stack(
            [(a - b).norm(dim=1).pow(self.alpha).mean() for a, b in zip(z[:-1], z[1:], strict=True)]
        ).mean()
        uniform = torch.stack(
            [torch.pdist(v).pow(2).mul(-self.t).exp().mean().log() for v in z]
        ).mean()
        return (align + self.weight * uniform).to(dtype)
