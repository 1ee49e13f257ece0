r"""Machinery shared by the engine-based losses: per-anchor loss from row statistics, views, options.

Every engine-based loss computes, for anchor :math:`i` with positives :math:`P(i)`,

.. math::

    L_i = -\frac{1}{|P(i)|}\sum_{p\in P(i)} s_{ip} + \log\Big(\sum_{p\in P(i)} e^{s_{ip}} + N_g(i)\Big),

where the sampler supplies :math:`\log N_g(i)` (uniform: the sum over negatives), and
averages over the anchors that have at least one positive.

Under ``torch.distributed`` (``gather=``) anchors stay local, candidates are gathered
from all ranks with gradient and each rank returns its share of the global mean; see
:mod:`contrastive.distributed` for the gradient contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from contrastive._validation import check_choice, check_embeddings, check_temperature
from contrastive.distributed import (
    BatchLayout,
    all_gather_rows,
    check_gather,
    count_across_ranks,
    world,
)
from contrastive.engine import BACKENDS, RowStats, resolve_backend, row_stats
from contrastive.samplers import MemoryQueue, resolve_sampler

Tensor = torch.Tensor
NEGATIVE_ONLY = -1  # label of extra negatives (queue); anchors' labels are remapped to >= 0


def anchor_losses(stats: RowStats, sampler: Any, temperature: float | Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(L_i, has_positive)``; ``L_i`` is 0 (with zero gradient) for anchors without positives."""
    valid = stats.pos_count > 0
    zero = torch.zeros((), dtype=stats.pos_lse.dtype, device=stats.pos_lse.device)
    safe = stats._replace(
        pos_lse=torch.where(valid, stats.pos_lse, zero), pos_sum=torch.where(valid, stats.pos_sum, zero)
    )
    log_negative = sampler.log_negative_term(safe, temperature)
    count = safe.pos_count.clamp(min=1).to(safe.pos_sum.dtype)
    losses = -safe.pos_sum / count + torch.logaddexp(safe.pos_lse, log_negative)
    return torch.where(valid, losses, zero), valid


def mean_over_valid(losses: Tensor, valid: Tensor, distributed: bool = False) -> Tensor:
    """Return the mean of ``losses`` over ``valid`` anchors; ValueError if there is none.

    ``distributed``: the anchors are this rank's share of the global batch; return
    ``world_size / (valid anchors on all ranks) * (sum of the local losses)``, the
    contract of :mod:`contrastive.distributed`.
    """
    n_valid = count_across_ranks(valid.sum(), valid.device) if distributed else int(valid.sum())
    if n_valid == 0:
        raise ValueError(
            "no anchor has a positive (every label occurs once and there is one view); "
            "pass at least two views or labels shared by two samples"
        )
    if distributed:
        return losses.sum() * (world()[1] / n_valid)
    return losses.sum() / n_valid


def normalize_views(views: Sequence[Tensor], normalize: bool) -> list[Tensor]:
    """L2-normalise each view's rows when ``normalize`` (zero rows stay zero, without NaN)."""
    return [F.normalize(v, dim=1) for v in views] if normalize else list(views)


def extra_negatives(negatives: Tensor | MemoryQueue | None, like: Tensor, normalize: bool) -> Tensor | None:
    """Return the extra negatives (a tensor or a queue's keys) checked, cast to ``like`` and normalised."""
    if negatives is None:
        return None
    if isinstance(negatives, MemoryQueue):
        negatives = negatives.negatives()
    negatives = check_embeddings(negatives, "negatives")
    if negatives.shape[1] != like.shape[1]:
        raise ValueError(
            f"negatives must have dimension {like.shape[1]} like the embeddings, "
            f"got shape {tuple(negatives.shape)}"
        )
    if negatives.shape[0] == 0:
        return None
    negatives = negatives.to(dtype=like.dtype, device=like.device)
    return F.normalize(negatives, dim=1) if normalize else negatives


def dense_labels(labels: Tensor) -> Tensor:
    """Map arbitrary integer labels to 0..K-1 (so that ``NEGATIVE_ONLY`` can never match one)."""
    return torch.unique(labels, return_inverse=True)[1]


def sample_labels(
    labels: Tensor | None, batch: int, device: torch.device, layout: BatchLayout | None = None
) -> Tensor:
    """Return dense per-sample labels: ``labels``, or one pair id per sample when it is None.

    With a ``layout`` they are the labels of the global batch (``(layout.total,)``): pair
    ids run over all ranks, and given labels are gathered before they are made dense, so
    that one class has one label on every rank.
    """
    if layout is None:
        return torch.arange(batch, device=device) if labels is None else dense_labels(labels)
    if labels is None:
        return torch.arange(layout.total, device=device)
    return dense_labels(all_gather_rows(labels, layout))


def append_negatives(candidates: Tensor, labels: Tensor, negatives: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return ``candidates`` and ``labels`` followed by the extra ``negatives`` labelled ``NEGATIVE_ONLY``."""
    if negatives is None:
        return candidates, labels
    fill = torch.full((negatives.shape[0],), NEGATIVE_ONLY, dtype=labels.dtype, device=labels.device)
    return torch.cat([candidates, negatives]), torch.cat([labels, fill])


def multiview_stats(
    z: Tensor,
    labels: Tensor,
    anchors: int | None,
    negatives: Tensor | None,
    temperature: float | Tensor,
    sampler: Any,
    backend: str,
    block_size: int | None,
) -> RowStats:
    """Row statistics of the stacked views ``z`` (labels >= 0) against themselves plus ``negatives``.

    ``anchors=None`` uses every row as an anchor; an int uses the first ``anchors`` rows.
    """
    n_anchor = z.shape[0] if anchors is None else anchors
    anchor_z, anchor_labels = (z, labels) if anchors is None else (z[:n_anchor], labels[:n_anchor])
    index = torch.arange(n_anchor, device=z.device)
    if negatives is None and anchors is None:
        return row_stats(
            z,
            z,
            labels,
            temperature=temperature,
            exponents=sampler.exponents,
            backend=backend,
            block_size=block_size,
        )
    candidates, candidate_labels = append_negatives(z, labels, negatives)
    return row_stats(
        anchor_z,
        candidates,
        anchor_labels,
        candidate_labels,
        index,
        temperature,
        sampler.exponents,
        backend,
        block_size,
    )


def gathered_multiview_stats(
    z: Tensor,
    labels: Tensor,
    layout: BatchLayout,
    n_views: int,
    anchors: int | None,
    negatives: Tensor | None,
    temperature: float | Tensor,
    sampler: Any,
    backend: str,
    block_size: int | None,
) -> RowStats:
    """Row statistics of this rank's stacked views ``z`` against the stacked views of all ranks.

    ``labels`` are the global per-sample labels (:func:`sample_labels` with ``layout``).
    Rank r's block of candidates is its views stacked, ``[v1_r; v2_r; ...]``, in rank
    order, gathered with gradient; ``negatives`` (the same on every rank) follow them.
    ``anchors=None`` uses every local row as an anchor; an int the first ``anchors`` rows.
    """
    stacked = layout.scaled(n_views)
    candidates = all_gather_rows(z, stacked)
    candidate_labels = torch.cat(
        [
            labels[start : start + n].repeat(n_views)
            for start, n in zip(layout.offsets(), layout.sizes, strict=True)
        ]
    )
    first = stacked.offset
    n_anchor = z.shape[0] if anchors is None else anchors
    anchor_labels = candidate_labels[first : first + n_anchor]
    index = first + torch.arange(n_anchor, device=z.device)
    candidates, candidate_labels = append_negatives(candidates, candidate_labels, negatives)
    return row_stats(
        z[:n_anchor],
        candidates,
        anchor_labels,
        candidate_labels,
        index,
        temperature,
        sampler.exponents,
        backend,
        block_size,
    )


class EngineLoss(torch.nn.Module):
    """Base class of engine-based losses: holds temperature, normalisation, sampler, backend and gather.

    ``gather`` (``"auto"``, ``True`` or ``False``) follows :mod:`contrastive.distributed`:
    ``auto`` gathers candidates from all ranks when more than one is initialised.
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.1,
        normalize: bool = True,
        sampler: Any = "uniform",
        backend: str = "auto",
        block_size: int | None = None,
        gather: str | bool = "auto",
    ) -> None:
        """Check and store the options shared by all engine-based losses."""
        super().__init__()
        check_temperature(temperature)
        check_choice(backend, "backend", BACKENDS)
        resolve_backend(backend, torch.device("cpu"))  # fail early: backend="triton" without triton installed
        self.temperature = temperature
        self.normalize = bool(normalize)
        self.sampler = resolve_sampler(sampler)
        self.backend = backend
        self.block_size = block_size
        self.gather = check_gather(gather)

    def engine_options(self) -> dict[str, Any]:
        """Return the keyword arguments the functional form takes from this module."""
        return {
            "temperature": self.temperature,
            "normalize": self.normalize,
            "sampler": self.sampler,
            "backend": self.backend,
            "block_size": self.block_size,
            "gather": self.gather,
        }

    def extra_repr(self) -> str:
        """Show the options."""
        t = self.temperature
        t = f"{float(t.detach()):.4g} (tensor)" if isinstance(t, Tensor) else t
        return (
            f"temperature={t}, normalize={self.normalize}, backend={self.backend!r}, gather={self.gather!r}"
        )
