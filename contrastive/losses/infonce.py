"""InfoNCE in query/key form, with in-batch and/or extra negatives (MoCo, retrieval)."""

from __future__ import annotations

from typing import Any

import torch

from contrastive._validation import check_embeddings, check_temperature
from contrastive.distributed import all_gather_rows, batch_layout, should_gather
from contrastive.engine import RowStats, row_stats
from contrastive.hookspecs import hookimpl
from contrastive.losses.base import (
    NEGATIVE_ONLY,
    EngineLoss,
    anchor_losses,
    append_negatives,
    extra_negatives,
    mean_over_valid,
)
from contrastive.samplers import MemoryQueue, resolve_sampler

Tensor = torch.Tensor


def _check_pair(query: object, key: object) -> tuple[Tensor, Tensor]:
    """Return ``(query, key)`` after checking they are finite, equally shaped 2-D tensors."""
    query, key = check_embeddings(query, "query"), check_embeddings(key, "key")
    if query.shape != key.shape:
        raise ValueError(
            f"query and key must have one shape, got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    if query.dtype != key.dtype or query.device != key.device:
        raise ValueError(
            f"query and key must share dtype and device, got {query.dtype}/{query.device} "
            f"and {key.dtype}/{key.device}"
        )
    return query, key


def infonce_loss(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | MemoryQueue | None = None,
    *,
    temperature: float | Tensor = 0.1,
    normalize: bool = True,
    in_batch_negatives: bool = True,
    sampler: Any = "uniform",
    backend: str = "auto",
    block_size: int | None = None,
    gather: str | bool = "auto",
) -> Tensor:
    """Return the InfoNCE loss of ``query`` against its ``key`` ``(B, D)``; see :class:`InfoNCELoss`."""
    query, key = _check_pair(query, key)
    check_temperature(temperature)
    batch = query.shape[0]
    distributed = should_gather(gather)
    layout = batch_layout(query, "query") if distributed and in_batch_negatives else None
    total = batch if layout is None else layout.total
    if in_batch_negatives and total < 2:
        raise ValueError(
            f"query must hold at least two samples for in-batch negatives, got batch size {total}"
            + ("" if layout is None else f" over all ranks ({', '.join(map(str, layout.sizes))})")
        )
    sampler = resolve_sampler(sampler)
    if normalize:
        query, key = torch.nn.functional.normalize(query, dim=1), torch.nn.functional.normalize(key, dim=1)
    extra = extra_negatives(negatives, query, normalize)
    labels = torch.arange(batch, device=query.device)
    options = {
        "temperature": temperature,
        "exponents": sampler.exponents,
        "backend": backend,
        "block_size": block_size,
    }
    if in_batch_negatives:
        candidates, candidate_labels = key, labels
        if layout is not None:  # keys of all ranks; pair ids offset by rank
            candidates = all_gather_rows(key, layout)
            candidate_labels = torch.arange(layout.total, device=query.device)
            labels = labels + layout.offset
        candidates, candidate_labels = append_negatives(candidates, candidate_labels, extra)
        stats = row_stats(query, candidates, labels, candidate_labels, None, **options)
    else:
        if extra is None:
            raise ValueError(
                "in_batch_negatives=False needs negatives= (a tensor or a non-empty MemoryQueue), got none"
            )
        fill = torch.full((extra.shape[0],), NEGATIVE_ONLY, dtype=torch.long, device=query.device)
        negative_stats = row_stats(query, extra, labels, fill, None, **options)
        positive = (query * key).sum(dim=1).to(negative_stats.neg_lse.dtype) / temperature
        ones = torch.ones(batch, dtype=torch.long, device=query.device)
        stats = RowStats(
            negative_stats.neg_lse,
            positive,
            positive,
            ones,
            negative_stats.neg_count,
            negative_stats.exponents,
        )
    return mean_over_valid(*anchor_losses(stats, sampler, temperature), distributed=distributed)


class InfoNCELoss(EngineLoss):
    r"""InfoNCE (van den Oord et al., 2018; He et al., 2020, "Momentum Contrast") in query/key form.

    Query :math:`q_i` has the positive key :math:`k_i`; its negatives are the other keys of
    the batch (``in_batch_negatives=True``, as in dense retrieval) and any extra
    ``negatives`` :math:`\{n_j\}` (a tensor, or a :class:`~contrastive.samplers.MemoryQueue` as in MoCo):

    .. math::

        \mathcal{L} = \frac{1}{B}\sum_i -\log\frac{e^{\langle q_i,k_i\rangle/\tau}}
            {e^{\langle q_i,k_i\rangle/\tau} + \sum_{j\ne i} e^{\langle q_i,k_j\rangle/\tau}
             + \sum_j e^{\langle q_i,n_j\rangle/\tau}}.

    With ``in_batch_negatives=False`` (MoCo) only the extra negatives are in the denominator.
    A sampler other than ``uniform`` replaces the sum over negatives.

    **Distributed** (``gather``, see :mod:`contrastive.distributed`): the local queries are
    the anchors; with in-batch negatives the keys of all ranks, gathered with gradient, are
    the candidates (pair ids offset by rank). Rank :math:`r` returns
    :math:`\frac{W}{B}\sum_{i\in r} L_i` for a global batch of :math:`B` pairs (the local
    mean when ranks hold equal batches), so the mean over ranks is the loss of the global
    batch and DDP's gradient averaging gives its exact gradient. Local batch sizes may
    differ. ``negatives`` are not gathered: pass the same on every rank (as a
    :class:`~contrastive.samplers.MemoryQueue` filled with ``enqueue`` under DDP is).
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.1,
        normalize: bool = True,
        in_batch_negatives: bool = True,
        sampler: Any = "uniform",
        backend: str = "auto",
        block_size: int | None = None,
        gather: str | bool = "auto",
    ) -> None:
        """Create the loss; see :func:`infonce_loss` for the options."""
        super().__init__(temperature, normalize, sampler, backend, block_size, gather)
        self.in_batch_negatives = bool(in_batch_negatives)

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | MemoryQueue | None = None) -> Tensor:
        """Return the loss of ``query`` against ``key`` (each ``(B, D)``), with optional ``negatives``."""
        return infonce_loss(
            query, key, negatives, in_batch_negatives=self.in_batch_negatives, **self.engine_options()
        )


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``infonce``."""
    register("infonce", InfoNCELoss)
