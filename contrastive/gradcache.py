r"""Gradient caching: batches larger than the encoder's activation memory, with the exact gradient.

Gao et al. (2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", RepL4NLP) split one step into three passes. With views :math:`x_v` cut into chunks
:math:`x_{v,c}` of ``chunk_size`` samples and an encoder :math:`f_\theta`:

1. embed every chunk without a graph, :math:`z_{v,c} = f_\theta(x_{v,c})`;
2. compute the loss on all embeddings at once and its gradient
   :math:`g_{v,c} = \partial\mathcal{L}/\partial z_{v,c}` (the loss's own parameters, such as
   a learnable temperature, get their gradient here);
3. re-run each chunk with a graph and back-propagate its cached gradient, accumulating

.. math::

    \frac{\partial\mathcal{L}}{\partial\theta}
        = \sum_{v}\sum_{c} \Big(\frac{\partial z_{v,c}}{\partial\theta}\Big)^{\!\top} g_{v,c},

which is the chain rule for the full batch, term by term. Only one chunk's activations
are alive at a time; the price is one more encoder forward per step. The random number
state (CPU, and CUDA where used) is recorded before each chunk's first pass and replayed
for its second, so that dropout draws the same masks in both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from contrastive._validation import check_choice
from contrastive.distributed import world

Tensor = torch.Tensor
Encoder = Callable[..., Tensor]
View = Tensor | Mapping[str, Tensor]

__all__ = ["BATCH_NORM_CHOICES", "CachedStep", "GradCache", "cached_backward"]

BATCH_NORM_CHOICES = ("error", "per_chunk")


class CachedStep(NamedTuple):
    """What :func:`cached_backward` returns: the loss and the embeddings of the step, both detached."""

    loss: Tensor
    """The loss value (unscaled when a ``scaler`` is used)."""
    embeddings: tuple[Tensor, ...]
    """One ``(B, D)`` tensor per view, from the first (no-graph) pass."""


def _check_chunk_size(chunk_size: object) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (samples per encoder call), got {chunk_size!r}")
    return chunk_size


def _per_view(encoder: Encoder | Sequence[Encoder], n_views: int) -> list[Encoder]:
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


def _split(view: View, chunk_size: int, index: int) -> list[View]:
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
    return [view] if isinstance(view, Tensor) else list(view.values())


def _encode(encoder: Encoder, chunk: View, where: str) -> Tensor:
    out = encoder(**chunk) if isinstance(chunk, Mapping) else encoder(chunk)
    rows = _tensors(chunk)[0].shape[0]
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != rows:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"the encoder of {where} must return a tensor with one row per sample ({rows}, ...), got "
            f"{shape}; wrap it so that it returns the embeddings"
        )
    return out


def _plain(encoder: Encoder) -> Encoder:
    """The module inside a DDP wrapper (the no-graph pass needs none of DDP's hooks or collectives)."""
    return encoder.module if isinstance(encoder, DistributedDataParallel) else encoder


def _modules(encoders: Sequence[Encoder]) -> Iterator[torch.nn.Module]:
    for e in {id(e): e for e in encoders}.values():
        if isinstance(e, torch.nn.Module):
            yield from e.modules()


def _batch_norms(encoders: Sequence[Encoder], mode: str) -> list[_BatchNorm]:
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


def _cuda_devices(encoders: Sequence[Encoder], views: Sequence[View]) -> list[int]:
    """Indices of the CUDA devices whose random state the encoder may draw from."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    tensors = [t for v in views for t in _tensors(v)]
    tensors += [p for m in _modules(encoders) for p in m.parameters(recurse=False)]
    current = torch.cuda.current_device()
    return sorted({current if t.device.index is None else t.device.index for t in tensors if t.is_cuda})


class _RandomState:
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


def _sync_points(
    encoders: Sequence[Encoder], trainable: Sequence[bool], n_chunks: Sequence[int]
) -> set[tuple[int, int]]:
    """The (view, chunk) of the last re-forward of each DDP module: the only one outside ``no_sync``."""
    last: dict[int, tuple[int, int]] = {}
    for v, (e, train) in enumerate(zip(encoders, trainable, strict=True)):
        if isinstance(e, DistributedDataParallel) and train:
            last[id(e)] = (v, n_chunks[v] - 1)
    return set(last.values())


def _trainable(encoder: Encoder) -> bool:
    if isinstance(encoder, torch.nn.Module):
        return any(p.requires_grad for p in encoder.parameters())
    return True  # a plain callable may close over parameters: re-run it and see


def _average_across_ranks(loss: object, sync: str | bool) -> None:
    """Average the gradients of the loss module's parameters over ranks, as DDP does for the encoder's."""
    _, world_size = world()
    if sync is False or not isinstance(loss, torch.nn.Module) or world_size == 1:
        return
    for p in loss.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world_size)


def cached_backward(
    encoder: Encoder | Sequence[Encoder],
    loss: Callable[..., Tensor],
    *views: View,
    chunk_size: int,
    labels: Tensor | None = None,
    scaler: Any = None,
    batch_norm: str = "error",
    sync_loss_grads: str | bool = "auto",
    verify: bool = False,
    **loss_options: Any,
) -> CachedStep:
    """Accumulate the gradient of ``loss(*encoder(views), labels=labels)`` into ``.grad``, chunk by chunk.

    See :class:`GradCache` for the arguments; ``loss_options`` (e.g. ``negatives=``) go to the loss.
    """
    chunk_size = _check_chunk_size(chunk_size)
    check_choice(batch_norm, "batch_norm", BATCH_NORM_CHOICES)
    if sync_loss_grads not in ("auto", True, False):
        raise ValueError(f"sync_loss_grads must be 'auto', True or False, got {sync_loss_grads!r}")
    if not views:
        raise ValueError("cached_backward needs at least one view (a batch of encoder inputs), got none")
    encoders = _per_view(encoder, len(views))
    norms = _batch_norms(encoders, batch_norm)
    chunks = [_split(view, chunk_size, i) for i, view in enumerate(views)]
    devices = _cuda_devices(encoders, views)
    norm_state = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in norms]

    states: list[list[_RandomState]] = []
    embeddings: list[Tensor] = []
    with torch.no_grad():  # pass 1: embeddings without a graph
        for v, (e, parts) in enumerate(zip(encoders, chunks, strict=True)):
            states.append([])
            outs = []
            for c, part in enumerate(parts):
                states[v].append(_RandomState(devices))
                outs.append(_encode(_plain(e), part, f"views[{v}], chunk {c}"))
            embeddings.append(torch.cat(outs))
    for m, saved in zip(norms, norm_state, strict=True):  # the second pass updates the running stats
        for k, b in m.named_buffers(recurse=False):
            b.copy_(saved[k])

    with torch.enable_grad():  # pass 2: the loss and its gradient w.r.t. the embeddings
        leaves = [z.detach().requires_grad_(True) for z in embeddings]
        kwargs = loss_options if labels is None else {"labels": labels, **loss_options}
        value = loss(*leaves, **kwargs)
        if not isinstance(value, Tensor) or value.dim() != 0 or not value.requires_grad:
            raise ValueError(
                "loss must return a scalar tensor that depends on the embeddings, got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
            )
        (value if scaler is None else scaler.scale(value)).backward()
        _average_across_ranks(loss, sync_loss_grads)

        trainable = [_trainable(e) for e in encoders]
        sync_at = _sync_points(encoders, trainable, [len(p) for p in chunks])
        for v, (e, parts, leaf) in enumerate(zip(encoders, chunks, leaves, strict=True)):
            if not trainable[v] or leaf.grad is None:
                continue
            grads = leaf.grad.split(chunk_size)
            for c, (part, grad) in enumerate(zip(parts, grads, strict=True)):  # pass 3: re-run with a graph
                no_sync = isinstance(e, DistributedDataParallel) and (v, c) not in sync_at
                with states[v][c].replayed(), e.no_sync() if no_sync else contextlib.nullcontext():
                    out = _encode(e, part, f"views[{v}], chunk {c}")
                    if verify:
                        _check_replay(out, embeddings[v][c * chunk_size : c * chunk_size + len(grad)], v, c)
                    if out.requires_grad:
                        out.backward(grad.to(out.dtype))
    return CachedStep(value.detach(), tuple(embeddings))


def _check_replay(out: Tensor, cached: Tensor, view: int, chunk: int) -> None:
    """RuntimeError if the re-forward of a chunk did not reproduce its first-pass embeddings."""
    if out.shape != cached.shape or not torch.allclose(out.detach(), cached, rtol=1e-5, atol=1e-6):
        same_shape = out.shape == cached.shape
        diff = (out.detach().float() - cached.float()).abs().max().item() if same_shape else None
        raise RuntimeError(
            f"the re-forward of views[{view}], chunk {chunk} gave other embeddings than the first pass "
            f"(max |difference| {diff}); the encoder is not reproducible under the replayed random state "
            "(a torch.Generator of its own, a non-deterministic kernel, or a layer that changes its state), "
            "so the cached gradients do not belong to it"
        )


class GradCache:
    r"""Accumulate the full-batch gradient of a contrastive loss with the encoder run in chunks.

    ``encoder`` maps a chunk of inputs ``(c, ...)`` to embeddings ``(c, D)``: one module shared
    by all views (SimCLR), or a sequence with one module per view (CLIP: ``[image_encoder,
    text_encoder]``); a view may also be a mapping of tensors (say ``input_ids`` and
    ``attention_mask``), passed to its encoder as keyword arguments. ``loss`` is any loss
    (``loss(*embeddings, labels=..., **loss_options)``); its own parameters, such as
    :class:`~contrastive.ClipLoss`'s ``logit_scale`` or a temperature ``torch.nn.Parameter``,
    receive their gradient too. ``chunk_size`` samples of one view go through the encoder at a
    time. :meth:`backward` accumulates into ``.grad`` exactly as ``loss.backward()`` on the full
    batch would (it does not zero them), to floating-point rounding, for encoders without
    layers that couple the samples of a batch:

    * **Randomness** (dropout) is replayed per chunk, so both passes see the same masks; the
      draws are those of running the chunks one after another.
    * **BatchNorm** in training mode raises ValueError (``batch_norm="error"``);
      ``batch_norm="per_chunk"`` instead normalises with the statistics of each chunk and
      updates the running statistics once per chunk, as a chunked forward with a graph would.
    * **AMP**: call :meth:`backward` inside ``torch.autocast``; both encoder passes and the
      loss run under it and the cached gradients are cast to the re-forward's dtype. With a
      ``torch.amp.GradScaler`` pass ``scaler=``: the loss is scaled before its backward, so the
      gradients end up scaled for ``scaler.step(optimizer)``.
    * **DDP**: pass the ``DistributedDataParallel`` module as the encoder. The no-graph pass
      runs its inner module; every re-forward but the last of each DDP module runs under
      ``no_sync()``, so its gradients are all-reduced once per step. The loss gathers across
      ranks as usual; ``sync_loss_grads="auto"`` averages the gradients of the loss's own
      parameters over ranks (DDP does not own them). With a plain module instead of DDP,
      all-reduce and average the encoder's gradients yourself after :meth:`backward`. Modules
      with buffers that DDP broadcasts need the same number of chunks on every rank.
    * ``verify=True`` checks that each re-forward reproduces its first-pass embeddings
      (RuntimeError otherwise), at the cost of a comparison per chunk.

    The embeddings of the last step stay in ``embeddings`` (detached), e.g. to
    ``enqueue`` keys into a :class:`~contrastive.MemoryQueue`.
    """

    def __init__(
        self,
        encoder: Encoder | Sequence[Encoder],
        loss: Callable[..., Tensor],
        chunk_size: int,
        *,
        scaler: Any = None,
        batch_norm: str = "error",
        sync_loss_grads: str | bool = "auto",
        verify: bool = False,
    ) -> None:
        """Hold the encoder(s), the loss and the options of :func:`cached_backward`."""
        self.encoder = encoder
        self.loss = loss
        self.chunk_size = _check_chunk_size(chunk_size)
        self.scaler = scaler
        self.batch_norm = check_choice(batch_norm, "batch_norm", BATCH_NORM_CHOICES)
        self.sync_loss_grads = sync_loss_grads
        self.verify = bool(verify)
        self.embeddings: tuple[Tensor, ...] = ()

    def backward(self, *views: View, labels: Tensor | None = None, **loss_options: Any) -> Tensor:
        """Accumulate the gradient of the loss of ``views`` (one input batch per view) and return the loss."""
        step = cached_backward(
            self.encoder,
            self.loss,
            *views,
            chunk_size=self.chunk_size,
            labels=labels,
            scaler=self.scaler,
            batch_norm=self.batch_norm,
            sync_loss_grads=self.sync_loss_grads,
            verify=self.verify,
            **loss_options,
        )
        self.embeddings = step.embeddings
        return step.loss

    def __repr__(self) -> str:
        """Show the chunk size and the options."""
        options = f"batch_norm={self.batch_norm!r}, verify={self.verify}"
        return f"GradCache(chunk_size={self.chunk_size}, {options})"
