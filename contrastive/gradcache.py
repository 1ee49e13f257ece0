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
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from contrastive._encoder_chunks import (
    Encoder,
    RandomState,
    View,
    check_chunk_size,
    cuda_devices,
    encode,
    per_view,
    plain_module,
    split_view,
    sync_points,
    trainable,
    training_batch_norms,
)
from contrastive._validation import check_choice
from contrastive.distributed import world

Tensor = torch.Tensor

__all__ = ["BATCH_NORM_CHOICES", "CachedStep", "GradCache", "cached_backward"]

BATCH_NORM_CHOICES = ("error", "per_chunk")


class CachedStep(NamedTuple):
    """What :func:`cached_backward` returns: the loss and the embeddings of the step, both detached."""

    loss: Tensor
    """The loss value (unscaled when a ``scaler`` is used)."""
    embeddings: tuple[Tensor, ...]
    """One ``(B, D)`` tensor per view, from the first (no-graph) pass."""


def _check_sync(sync: object) -> str | bool:
    """Return ``sync`` if it is ``"auto"``, ``True`` or ``False``; else raise ValueError naming it."""
    if not (sync == "auto" and isinstance(sync, str)) and not isinstance(sync, bool):
        raise ValueError(f"sync_loss_grads must be 'auto', True or False, got {sync!r}")
    return sync


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
    chunk_size = check_chunk_size(chunk_size)
    check_choice(batch_norm, "batch_norm", BATCH_NORM_CHOICES)
    _check_sync(sync_loss_grads)
    if not views:
        raise ValueError("cached_backward needs at least one view (a batch of encoder inputs), got none")
    encoders = per_view(encoder, len(views))
    trains = [trainable(e) for e in encoders]
    norms = training_batch_norms(encoders, batch_norm)  # ValueError for BatchNorm unless per_chunk
    if norms:  # only encoders that are re-run update their running statistics there
        norms = training_batch_norms([e for e, t in zip(encoders, trains, strict=True) if t], batch_norm)
    chunks = [split_view(view, chunk_size, i) for i, view in enumerate(views)]
    devices = cuda_devices(encoders, views)
    norm_state = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in norms]

    states: list[list[RandomState]] = []
    embeddings: list[Tensor] = []
    with torch.no_grad():  # pass 1: embeddings without a graph
        for v, (e, parts) in enumerate(zip(encoders, chunks, strict=True)):
            states.append([])
            outs = []
            for c, part in enumerate(parts):
                states[v].append(RandomState(devices))
                outs.append(encode(plain_module(e), part, f"views[{v}], chunk {c}"))
            embeddings.append(torch.cat(outs))
    for m, saved in zip(norms, norm_state, strict=True):  # the re-forward updates the running stats
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

        sync_at = sync_points(encoders, trains, [len(p) for p in chunks])
        for v, (e, parts, leaf) in enumerate(zip(encoders, chunks, leaves, strict=True)):
            if not trains[v] or leaf.grad is None:
                continue
            grads = leaf.grad.split(chunk_size)
            for c, (part, grad) in enumerate(zip(parts, grads, strict=True)):  # pass 3: re-run with a graph
                no_sync = isinstance(e, DistributedDataParallel) and (v, c) not in sync_at
                with states[v][c].replayed(), e.no_sync() if no_sync else contextlib.nullcontext():
                    out = encode(e, part, f"views[{v}], chunk {c}")
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
      ``no_sync()``, so its gradients are all-reduced once per step (without it every chunk
      all-reduces, and ranks with unequal numbers of chunks hang). The loss gathers across
      ranks as usual; ``sync_loss_grads="auto"`` averages the gradients of the loss's own
      parameters over ranks (DDP does not own them). With a plain module instead of DDP,
      all-reduce and average the encoder's gradients yourself after :meth:`backward`. Modules
      with buffers that DDP broadcasts need the same number of chunks on every rank.
    * ``verify=True`` checks that each re-forward reproduces its first-pass embeddings
      (RuntimeError otherwise), at the cost of a comparison per chunk.

    An encoder without trainable parameters (a momentum key encoder) runs once, not twice.
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
        self.chunk_size = check_chunk_size(chunk_size)
        self.scaler = scaler
        self.batch_norm = check_choice(batch_norm, "batch_norm", BATCH_NORM_CHOICES)
        self.sync_loss_grads = _check_sync(sync_loss_grads)
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
