"""Batch norm over the global batch under ``torch.distributed`` (torch's ``SyncBatchNorm`` is CUDA-only).

With per-rank batch norm a 2-rank run normalises each half of the batch with its own statistics,
so it is not the one-process run on the global batch. :func:`sync_batch_norm` swaps every batch
norm layer for one that all-reduces the per-channel sums: torch's ``SyncBatchNorm`` on CUDA,
:class:`GlobalBatchNorm` (the same computation with differentiable ``all_reduce``) elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.nn.functional import all_reduce

__all__ = ["GlobalBatchNorm", "sync_batch_norm"]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch of all ranks.

    Mean ``μ = Σx / n`` and biased variance ``σ² = Σx² / n − μ²`` over every rank's samples
    (and positions), from one differentiable ``all_reduce`` of ``(Σx, Σx², n)`` per channel;
    the running variance is updated with the unbiased ``σ² n / (n − 1)`` as in ``nn.BatchNorm``.
    In eval mode, or without a process group, it is plain batch norm. Parameter and buffer
    names are those of ``nn.BatchNorm*d``, so state dicts move freely between the two.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise ``input`` (N, C, ...) with the global batch statistics in training mode."""
        self._check_input_dim(input)
        dist = torch.distributed
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = torch.full((1,), float(input.numel() // input.shape[1]), device=input.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = input.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), momentum)
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def sync_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every ``nn.BatchNorm*d`` replaced by a global-batch one (weights and buffers kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        ).to(device)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, sync_batch_norm(child, device))
    return module
