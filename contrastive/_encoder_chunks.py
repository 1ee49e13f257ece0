"""Encoder passes over chunks of the inputs, for :mod:`contrastive.gradcache`.

Splitting views into chunks, calling an encoder on one, the random state that replays a
chunk, and what the encoders hold that matters to caching: BatchNorm, DDP, trainable parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

Tensor = torch.Tensor
Encoder = Callable[..., Tensor]
View = Tensor | Mapping[str, Tensor]


def check_chunk_size(chunk_size: object) -> int:
    """Return ``chunk_size`` if it is a positive int, else raise ValueError."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (samples per encoder call), got {chunk_size!r}")
    return chunk_size


def per_view(encoder: Encoder | Sequence[Encoder], n_views: int) -> list[Encoder]:
    """One encoder per view: a single callable is shared; a sequence must hold one per view."""
    if isinstance(encoder, (list, tuple, torch.nn.ModuleList)):
        encoders = list(encoder)
        if len(encoders) != n_views:
            raise ValueError(
                f"encoder must be one callable or one per view, got {len(encoders)} encoders for "
                f"{n_views} views"
            )
    else:
        encoders = [encoder] * n_views
    for i, e in enumerate(encoders):
        if not callable(e):
            raise TypeError(f"encoder[{i}] must be callable (an nn.Module), got {type(e).__name__}")
    return encoders


def split_view(view: View, chunk_size: int, index: int) -> list[View]:
    """Cut a view (a tensor, or a mapping of tensors with one leading batch size) into chunks."""
    if isinstance(view, Tensor):
        if view.dim() == 0 or view.shape[0] == 0:
            raise ValueError(f"views[{index}] must have a non-empty batch dimension, got {tuple(view.shape)}")
        return list(view.split(chunk_size))
    if not isinstance(view, Mapping) or not view:
        raise TypeError(
            f"views[{index}] must be a tensor (B, ...) or a non-empty mapping of such tensors "
            f"(the encoder's keyword arguments), got {type(view).__name__}"
        )
    sizes = {k: (v.shape[0] if isinstance(v, Tensor) and v.dim() else None) for k, v in view.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise ValueError(
            f"views[{index}] must map names to tensors of one non-empty batch size, got sizes {sizes}"
        )
    parts = {k: v.split(chunk_size) for k, v in view.items()}
    return [dict(zip(parts, chunk, strict=True)) for chunk in zip(*parts.values(), strict=True)]


def _tensors(view: View) -> list[Tensor]:
    """The tensors of a view (itself, or the values of a mapping)."""
    return [view] if isinstance(view, Tensor) else list(view.values())


def encode(encoder: Encoder, chunk: View, where: str) -> Tensor:
    """Call ``encoder`` on a chunk (keyword arguments for a mapping); ValueError unless one row per sample."""
    out = encoder(**chunk) if isinstance(chunk, Mapping) else encoder(chunk)
    rows = _tensors(chunk)[0].shape[0]
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != rows:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"the encoder of {where} must return a tensor with one row per sample ({rows}, ...), got "
            f"{shape}; wrap it so that it returns the embeddings"
        )
    return out


def plain_module(encoder: Encoder) -> Encoder:
    """The module inside a DDP wrapper (the no-graph pass needs none of DDP's hooks or collectives)."""
    return encoder.module if isinstance(encoder, DistributedDataParallel) else encoder


def _modules(encoders: Sequence[Encoder]) -> Iterator[torch.nn.Module]:
    """Every submodule of the distinct module encoders."""
    for e in {id(e): e for e in encoders}.values():
        if isinstance(e, torch.nn.Module):
            yield from e.modules()


def training_batch_norms(encoders: Sequence[Encoder], mode: str) -> list[_BatchNorm]:
    """The BatchNorm layers in training mode; ValueError unless ``mode`` is ``per_chunk`` (never for Sync)."""
    found = {id(m): m for m in _modules(encoders) if isinstance(m, _BatchNorm) and m.training}
    layers = list(found.values())
    sync = [m for m in layers if isinstance(m, torch.nn.SyncBatchNorm)]
    if (layers and mode == "error") or sync:
        names = sorted({type(m).__name__ for m in layers})
        raise ValueError(
            f"the encoder has BatchNorm in training mode ({', '.join(names)}), whose statistics couple the "
            "samples of a chunk, so gradient caching cannot give the full-batch gradient; use GroupNorm or "
            "LayerNorm, put the BatchNorm layers in eval mode, or pass batch_norm='per_chunk' for "
            "statistics per chunk of chunk_size samples (ghost batch norm; not for SyncBatchNorm)"
        )
    return layers


def cuda_devices(encoders: Sequence[Encoder], views: Sequence[View]) -> list[int]:
    """Indices of the CUDA devices whose random state the encoder may draw from."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    tensors = [t for v in views for t in _tensors(v)]
    tensors += [p for m in _modules(encoders) for p in m.parameters(recurse=False)]
    current = torch.cuda.current_device()
    return sorted({current if t.device.index is None else t.device.index for t in tensors if t.is_cuda})


class RandomState:
    """The CPU and CUDA random states at one moment, to replay a chunk's randomness."""

    def __init__(self, devices: list[int]) -> None:
        self.devices = devices
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in devices]

    @contextlib.contextmanager
    def replayed(self) -> Iterator[None]:
        """Run the body from this state; afterwards the random state is what it was before the body."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda, strict=True):
                torch.cuda.set_rng_state(state, device)
            yield


def sync_points(
    encoders: Sequence[Encoder], trainable: Sequence[bool], n_chunks: Sequence[int]
) -> set[tuple[int, int]]:
    """The (view, chunk) of the last re-forward of each DDP module: the only one outside ``no_sync``."""
    last: dict[int, tuple[int, int]] = {}
    for v, (e, train) in enumerate(zip(encoders, trainable, strict=True)):
        if isinstance(e, DistributedDataParallel) and train:
            last[id(e)] = (v, n_chunks[v] - 1)
    return set(last.values())


def trainable(encoder: Encoder) -> bool:
    """Whether the encoder may have parameters to train (a module with one that requires grad)."""
    if isinstance(encoder, torch.nn.Module):
        return any(p.requires_grad for p in encoder.parameters())
    return True  # a plain callable may close over parameters: re-run it and see
