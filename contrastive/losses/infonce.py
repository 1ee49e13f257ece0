"""InfoNCE in query/key form, with in-batch and/or extra negatives (MoCo, retrieval)."""

from __future__ import annotations

from typing import Any

import torch

from contrastive._validation import check_embeddings, checked_temperature
from contrastive.distributed import agreed_layout, all_gather_rows
from contrastive.engine import RowStats, row_stats
from contrastive.hookspecs import hookimpl
from contrastive.losses.base import (
    NEGATIVE_ONLY,
    EngineLoss,
    EngineOptions,
    anchor_losses,
    append_negatives,
    candidate_similarity_sums,
    check_label_smoothing,
    check_weights,
    engine_options,
    extra_negatives,
    mean_over_valid,
    unit_rows,
)
from contrastive.samplers import MemoryQueue

Tensor = torch.Tensor


def _check_pair(query: object, key: object, finite: bool) -> tuple[Tensor, Tensor]:
    """Return ``(query, key)`` after checking they are (finite,) equally shaped 2-D tensors."""
    query, key = check_embeddings(query, "query", finite), check_embeddings(key, "key", finite)
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
    in_batch_negatives: bool = True,
    label_smoothing: float = 0.0,
    weights: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """Return the InfoNCE loss of ``query`` against its ``key`` ``(B, D)``; see :class:`InfoNCELoss`.

    ``label_smoothing`` and ``weights`` ``(B,)`` are as in :class:`InfoNCELoss`; ``options``
    are the :class:`~contrastive.losses.base.EngineOptions`.
    """
    checked = engine_options(options)
    return _infonce(query, key, negatives, temperature, bool(in_batch_negatives), checked,
                    check_label_smoothing(label_smoothing, checked), weights)


def _infonce(query: Tensor, key: Tensor, negatives: Tensor | MemoryQueue | None, temperature: float | Tensor,
             in_batch_negatives: bool, options: EngineOptions, label_smoothing: float = 0.0,
             weights: Tensor | None = None) -> Tensor:
    """InfoNCE with checked options."""
    def check() -> tuple[float | Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        q, k = _check_pair(query, key, options.validate_args)
        tau = checked_temperature(temperature, options.validate_args)  # a float from here on (NumPy too)
        extra = extra_negatives(negatives, q, options)
        if not in_batch_negatives and extra is None:
            raise ValueError(
                "in_batch_negatives=False needs negatives= (a tensor or a non-empty MemoryQueue), got none"
            )
        return tau, q, k, extra, check_weights(weights, q.shape[0], options.validate_args)

    (temperature, query, key, extra, weights), layout = agreed_layout(check, lambda c: c[1], "query",
                                                                      options.gather)
    if layout.total < 1:
        raise ValueError("query must hold at least one sample, got batch size 0")
    batch = query.shape[0]
    if options.normalize:
        query, key = (unit_rows(x, options.rows_dtype(x)) for x in (query, key))
    labels = torch.arange(batch, device=query.device)
    sampler = options.resolved_sampler
    engine = {"temperature": temperature, **options.engine(sampler)}
    if in_batch_negatives:
        candidates, candidate_labels = key, labels
        if layout.world_size > 1:  # keys of all ranks; pair ids offset by rank
            candidates = all_gather_rows(key, layout)
            candidate_labels = torch.arange(layout.total, device=query.device)
            labels = labels + layout.offset
        candidates, candidate_labels = append_negatives(candidates, candidate_labels, extra)
        stats = row_stats(query, candidates, labels, candidate_labels, **engine)
        sims = candidate_similarity_sums(query, candidates, temperature) if label_smoothing else None
    else:
        assert extra is not None  # checked above
        fill = torch.full((extra.shape[0],), NEGATIVE_ONLY, dtype=torch.long, device=query.device)
        negative = row_stats(query, extra, labels, fill, **{**engine, "joint": False})
        positive = (query * key).sum(dim=1).to(negative.neg_lse.dtype) / temperature
        ones = torch.ones(batch, dtype=torch.long, device=query.device)
        stats = RowStats(negative.neg_lse, positive, positive, ones, negative.neg_count, negative.exponents)
        sims = positive + candidate_similarity_sums(query, extra, temperature) if label_smoothing else None
    smoothing = None if sims is None else (label_smoothing, sims)
    losses, valid = anchor_losses(stats, sampler, temperature, decoupled=options.decoupled, smoothing=smoothing)
    return mean_over_valid(losses, valid, layout, options, weights)


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
    ``label_smoothing=ε`` smooths the one-hot target over the :math:`C` candidates (the key,
    the in-batch keys and the extra negatives) as ``torch.nn.functional.cross_entropy``
    does: :math:`L_i = \log\sum_j e^{s_{ij}} - (1-\epsilon)s_{ii} - \frac{\epsilon}{C}\sum_j s_{ij}`,
    the last sum computed as :math:`\langle q_i, \sum_j c_j\rangle/\tau` (no B x C matrix).
    ``weights`` ``(B,)`` passed to ``forward`` weight each query in the mean.
    A sampler other than ``uniform`` replaces the sum over negatives. The remaining keyword
    options are the :class:`~contrastive.losses.base.EngineOptions`.

    **Distributed** (``gather``, see :mod:`contrastive.distributed`): the local queries are
    the anchors; with in-batch negatives the keys of all ranks, gathered with gradient, are
    the candidates (pair ids offset by rank). Rank :math:`r` returns
    :math:`\frac{W}{B}\sum_{i\in r} L_i` for a global batch of :math:`B` pairs (the local
    mean when ranks hold equal batches), so the mean over ranks is the loss of the global
    batch and DDP's gradient averaging gives its exact gradient. Local batch sizes may
    differ. ``negatives`` are not gathered: pass the same on every rank (as a
    :class:`~contrastive.samplers.MemoryQueue` filled with ``enqueue`` under DDP is).
    """

    def __init__(self, temperature: float | Tensor = 0.1, in_batch_negatives: bool = True,
                 label_smoothing: float = 0.0, **options: Any) -> None:
        """Create the loss; ``options`` are the :class:`~contrastive.losses.base.EngineOptions`."""
        super().__init__(temperature, **options)
        self.in_batch_negatives = bool(in_batch_negatives)
        self.label_smoothing = check_label_smoothing(label_smoothing, self.options)

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | MemoryQueue | None = None, *,
                weights: Tensor | None = None) -> Tensor:
        """Return the loss of ``query`` against ``key`` (each ``(B, D)``), with optional ``negatives`` and ``weights``."""
        return _infonce(query, key, negatives, self.temperature, self.in_batch_negatives, self.options,
                        self.label_smoothing, weights)


@hookimpl
def register_losses(register) -> None:  # noqa: ANN001
    """Register ``infonce``."""
    register("infonce", InfoNCELoss)
