r"""Machinery shared by the engine-based losses: per-anchor loss from row statistics, views, options.

Every engine-based loss computes, for anchor :math:`i` with positives :math:`P(i)`,

.. math::

    L_i = -\frac{1}{|P(i)|}\sum_{p\in P(i)} s_{ip} + \log\Big(\sum_{p\in P(i)} e^{s_{ip}} + N_g(i)\Big),

where the sampler supplies :math:`\log N_g(i)` (uniform: the sum over negatives, so the
logarithm is the joint log-sum-exp over every candidate but the anchor, which the engine
forms without any label mask), and averages over the anchors that have at least one positive.

Under ``torch.distributed`` (``gather=``) anchors stay local, candidates are gathered
from all ranks with gradient and each rank returns its share of the global mean; see
:mod:`contrastive.distributed` for the gradient contract. A single process is the
one-rank case of the same path.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from contrastive._validation import check_choice, check_embeddings, check_temperature, check_unit_interval
from contrastive.distributed import (
    BatchLayout,
    all_gather_rows,
    all_reduce_sum,
    check_gather,
    count_across_ranks,
    world,
)
from contrastive.engine import BACKENDS, RowStats, resolve_backend, row_stats
from contrastive.errors import NoPositiveWarning
from contrastive.engine.dispatch import check_block_size
from contrastive.engine.reference import compute_dtype
from contrastive.engine.stats import label_ids
from contrastive.samplers import MemoryQueue, resolve_sampler

Tensor = torch.Tensor
NEGATIVE_ONLY = -1  # label of extra negatives (queue); anchors' labels are mapped to >= 0
NO_POSITIVE = ("zero", "raise")


@dataclass(frozen=True)
class EngineOptions:
    r"""The options every engine-based loss takes, checked once (keyword-only in every loss).

    * ``normalize``: L2-normalise the embeddings first (the cosine similarity of SimCLR).
    * ``sampler``: how negatives are weighted: a registered name, a class or an instance.
    * ``backend``: ``"auto"`` (Triton on CUDA, else chunked), ``"chunked"``, ``"triton"``,
      ``"reference"`` (materialised, for tests).
    * ``block_size``: tile edge of the chunked engine (None: chosen from the problem size).
    * ``gather``: ``"auto"``, True or False; see :mod:`contrastive.distributed`.
    * ``validate_args``: check inputs (finite values, label ranges); False skips every check
      that reads from the device, so the loss runs without host syncs and compiles with
      ``torch.compile(fullgraph=True)``.
    * ``decoupled``: leave the positives out of the denominator (DCL, Yeh et al., 2022,
      "Decoupled Contrastive Learning"): :math:`L_i = -\frac{1}{|P(i)|}\sum_p s_{ip} + \log N_g(i)`.
      An anchor then needs a negative as well as a positive to enter the mean.
    * ``no_positive``: a batch in which no anchor has a positive (one sample, or one view of
      distinct labels) gives ``"zero"`` (the default: a zero loss still connected to the
      graph, so ``backward()`` works and DDP sees every parameter; with ``validate_args``
      a :class:`~contrastive.NoPositiveWarning` once per loss) or ``"raise"`` (ValueError;
      needs ``validate_args``). Under ``gather`` every rank takes the same decision.
    """

    normalize: bool = True
    sampler: Any = "uniform"
    backend: str = "auto"
    block_size: int | None = None
    gather: str | bool = "auto"
    validate_args: bool = True
    no_positive: str = "zero"
    decoupled: bool = False
    _resolved: Any = field(default=None, repr=False, compare=False)
    _warned: list = field(default_factory=lambda: [False], repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check every option and resolve the sampler."""
        check_choice(self.backend, "backend", BACKENDS)
        resolve_backend(self.backend, torch.device("cpu"))  # fail early: 'triton' without triton installed
        check_block_size(self.block_size)
        check_gather(self.gather)
        check_choice(self.no_positive, "no_positive", NO_POSITIVE)
        if self.no_positive == "raise" and not self.validate_args:
            raise ValueError("no_positive='raise' reads the number of positives from the device; "
                             "it needs validate_args=True")
        for name in ("normalize", "validate_args", "decoupled"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        object.__setattr__(self, "_resolved", resolve_sampler(self.sampler))

    @property
    def resolved_sampler(self) -> Any:
        """The sampler instance."""
        return self._resolved

    def rows_dtype(self, x: Tensor) -> torch.dtype:
        """The dtype of the normalised rows handed to the engine for inputs ``x``.

        The input's on the Triton path (its kernels read half precision and accumulate in
        float32); else the accumulation dtype, which the chunked engine computes in anyway,
        so that the gradient with respect to the rows (about 1/τ) cannot overflow float16.
        """
        if resolve_backend(self.backend, x.device, x.dtype) == "triton":
            return x.dtype
        return compute_dtype(x.dtype)

    def engine(self, sampler: Any | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`~contrastive.engine.row_stats` for these options and ``sampler``."""
        sampler = self._resolved if sampler is None else sampler
        return {
            "exponents": sampler.exponents,
            "joint": is_uniform(sampler) and not self.decoupled,  # decoupled: the negatives alone
            "norm_bound": 1.0 if self.normalize else None,
            "backend": self.backend,
            "block_size": self.block_size,
            "validate_args": self.validate_args,
        }


def engine_options(options: dict[str, Any]) -> EngineOptions:
    """Return the :class:`EngineOptions` of a functional loss's keyword arguments (TypeError for others)."""
    names = [f.name for f in fields(EngineOptions) if not f.name.startswith("_")]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise TypeError(
            f"unexpected option(s) {', '.join(map(repr, unknown))}; the engine options are {', '.join(names)}"
        )
    return EngineOptions(**options)


def is_uniform(sampler: Any) -> bool:
    """Whether ``sampler``'s negative term is the plain sum over negatives (then the engine's joint form serves)."""
    check = getattr(sampler, "is_uniform", None)
    return bool(check()) if callable(check) else False


def all_anchors_valid(stats: RowStats, decoupled: bool = False) -> bool:
    """Whether every anchor is known in Python to enter the mean (pair positives in one process: ``known_counts``)."""
    known = stats.known_counts
    return known is not None and known[0] > 0 and (known[1] > 0 or not decoupled) and stats.pos_weight is None


def anchor_losses(stats: RowStats, sampler: Any, temperature: float | Tensor, *, decoupled: bool = False,
                  positive_weight: Tensor | None = None, smoothing: tuple[float, Tensor] | None = None
                  ) -> tuple[Tensor, Tensor]:
    r"""Return ``(L_i, valid)``; ``L_i`` is 0 (with zero gradient) for anchors that do not enter the mean.

    ``decoupled``: the denominator is the negative term alone (an anchor needs a negative too).
    ``positive_weight``: a per-anchor factor of the positive term (DCLW). ``smoothing``
    ``(eps, sims)``: label smoothing with ``sims[i]`` :math:`=\sum_j s_{ij}` over the anchor's
    candidates; the positive term becomes :math:`(1-\epsilon)\bar s_{iP} + \epsilon\,\bar s_{i\cdot}`.
    """
    known = stats.known_counts
    all_valid = all_anchors_valid(stats, decoupled)  # no guards for empty sets
    if all_valid:
        valid = torch.ones_like(stats.pos_sum, dtype=torch.bool)
        count, zero = known[0], None
    else:
        valid = stats.pos_count > 0
        if decoupled:
            valid = valid & (stats.neg_count > 0)
        count = stats.pos_count.clamp(min=1)
        if stats.pos_weight is not None:  # weighted positives (multi-hot labels): divide by the total weight
            count = torch.where(valid, stats.pos_weight, torch.ones_like(stats.pos_weight))
        zero = torch.zeros((), dtype=stats.pos_sum.dtype, device=stats.pos_sum.device)

    def kept(x: Tensor) -> Tensor:
        """``x`` on the valid anchors, 0 (with zero gradient) elsewhere."""
        return x if all_valid else torch.where(valid, x, zero)

    positive = stats.pos_sum / count  # 0 without positives: pos_sum is 0 there
    if smoothing is not None:
        eps, sims = smoothing
        candidates = max(sum(known), 1) if all_valid else (stats.pos_count + stats.neg_count).clamp(min=1)
        positive = (1 - eps) * positive + eps * sims / candidates
    if positive_weight is not None:
        positive = positive * positive_weight
    if stats.all_lse is not None:
        return kept(stats.all_lse - positive), valid
    safe = stats if all_valid else stats._replace(pos_lse=kept(stats.pos_lse), pos_sum=kept(stats.pos_sum))
    if decoupled:  # rows without negatives have -inf there: keep them finite, they are masked below
        if not all_valid:
            safe = safe._replace(neg_lse=torch.where(valid[:, None], safe.neg_lse, zero))
        denominator = sampler.log_negative_term(safe, temperature)
    else:
        denominator = torch.logaddexp(safe.pos_lse, sampler.log_negative_term(safe, temperature))
    return kept(denominator - positive), valid  # positive is finite on every row


def mean_over_valid(losses: Tensor, valid: Tensor | None, layout: BatchLayout | None = None,
                    options: EngineOptions | None = None, weights: Tensor | None = None) -> Tensor:
    """Return the mean of ``losses`` over ``valid`` anchors (``weights``: the weighted mean).

    ``valid=None``: every anchor, known in Python (:func:`all_anchors_valid`); nothing is counted.

    ``layout`` (gathering): the anchors are this rank's share of the global batch; return
    ``world_size / (valid anchors on all ranks) * (sum of the local losses)``, the contract of
    :mod:`contrastive.distributed`; with per-anchor ``weights`` the count becomes the sum of
    the valid anchors' weights on all ranks (all-reduced with gradient). A batch without any
    valid anchor follows ``options.no_positive`` (the count is all-reduced first, so every
    rank decides alike); its loss is 0, connected to the graph.
    """
    options = EngineOptions() if options is None else options
    gathering = layout is not None and layout.world_size > 1
    if valid is None and gathering:
        valid = torch.ones_like(losses, dtype=torch.bool)
    if valid is None:
        n_valid = losses.numel()
    else:
        n_valid = valid.sum()
        if gathering and (weights is None or options.validate_args):
            n_valid = count_across_ranks(n_valid, valid.device)
        if options.validate_args:
            check_some_valid(n_valid, options, stacklevel=5)
    world_size = layout.world_size if gathering else 1
    if weights is not None:
        weights = weights.to(losses.dtype) if valid is None else torch.where(
            valid, weights.to(losses.dtype), torch.zeros((), dtype=losses.dtype, device=losses.device))
        total_weight = all_reduce_sum(weights.sum()) if gathering else weights.sum()
        safe = torch.where(total_weight > 0, total_weight, torch.ones_like(total_weight))
        return (losses * weights).sum() * world_size / safe
    total = losses.sum() * world_size if gathering else losses.sum()
    return total / (n_valid.clamp(min=1) if isinstance(n_valid, Tensor) else max(n_valid, 1))


def check_some_valid(n_valid: Tensor | int, options: EngineOptions, stacklevel: int = 4) -> None:
    """Apply ``options.no_positive`` when ``n_valid`` (read from the device) is 0: ValueError or one warning."""
    if int(n_valid) != 0:
        return
    message = ("no anchor has a positive (every label occurs once and there is one view, or the "
               "batch holds one sample)")
    if options.decoupled:
        message = "no anchor has both a positive and a negative (decoupled=True needs two samples or more)"
    if options.no_positive == "raise":
        raise ValueError(message + "; pass at least two views or labels shared by two samples")
    if not options._warned[0]:
        options._warned[0] = True
        warnings.warn(message + ": the loss is 0 for this batch (no_positive='raise' makes it an error)",
                      NoPositiveWarning, stacklevel=stacklevel)


def candidate_similarity_sums(anchors: Tensor, candidates: Tensor, temperature: float | Tensor) -> Tensor:
    r"""Return :math:`\sum_j s_{ij}` per anchor, the statistic of label smoothing, in O((M + N) D).

    :math:`\sum_j \langle a_i, c_j\rangle/\tau = \langle a_i, \sum_j c_j\rangle/\tau`: one sum over
    the candidates, no similarity matrix. In the accumulation dtype.
    """
    dtype = compute_dtype(anchors.dtype)
    return (anchors.to(dtype) @ candidates.to(dtype).sum(dim=0)) / temperature


def check_label_smoothing(label_smoothing: object, options: EngineOptions) -> float:
    """Return ``label_smoothing`` as a float in [0, 1); ValueError with ``decoupled`` (no target over the positive)."""
    eps = check_unit_interval(label_smoothing, "label_smoothing")
    if eps and options.decoupled:
        raise ValueError("label_smoothing spreads the target over every candidate, the positive included; "
                         "it is not defined with decoupled=True, which leaves the positive out of the denominator")
    return eps


def check_weights(weights: object, anchors: int, validate_args: bool) -> Tensor | None:
    """Return per-sample ``weights`` ``(B,)`` checked (floating, finite, >= 0 read from the device if validating)."""
    if weights is None:
        return None
    if not isinstance(weights, Tensor) or weights.shape != (anchors,) or not weights.is_floating_point():
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"weights must be a floating tensor of shape ({anchors},), one per sample, got {shape}")
    if validate_args and not bool(torch.isfinite(weights).all() & (weights >= 0).all()):
        raise ValueError("weights must be finite and >= 0 (a zero weight removes a sample from the mean)")
    return weights


def _peak_scaled(x: Tensor) -> tuple[Tensor, Tensor]:
    """Return each row's largest magnitude and the row divided by it, in the accumulation dtype (zero rows: 0)."""
    dtype = compute_dtype(x.dtype)
    xc = x.to(dtype)
    # detached: the direction x / ||x|| does not depend on the peak, and peak * ||x / peak|| depends
    # on it only through x, so the exact gradient through the peak is zero (computing it would
    # only form a huge cancelling pair: inf - inf where the gradient overflows)
    peak = xc.detach().abs().amax(dim=1, keepdim=True)
    zero = torch.zeros((), dtype=dtype, device=x.device)
    return peak, torch.where(peak > 0, xc / peak.clamp_min(torch.finfo(dtype).tiny), zero)


def unit_rows(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """L2-normalise the rows of ``x`` for every finite input its dtype can hold; zero rows stay zero.

    The rows are first divided by their largest magnitude, so the norm neither overflows (fp32
    rows of norm above ~1.8e19, fp16 above 65,504) nor underflows, and the division runs in the
    accumulation dtype (fp16's ``eps`` would otherwise underflow and make a zero row NaN). A
    zero row has no direction: it stays zero and gets a zero gradient. The result has ``dtype``
    (default: ``x``'s). The backward is written out, ``(g - u<u, g>) / ‖x‖``, so the graph keeps
    the unit rows and one inverse norm per row, not the steps of the division.
    """
    return UnitRows.apply(x, x.dtype if dtype is None else dtype)


def unit_with_inverse_norms(x: Tensor) -> tuple[Tensor, Tensor]:
    """Return the unit rows of ``x`` and each row's ``1/‖x_i‖`` (0 for a zero row), without overflow (no autograd)."""
    peak = x.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(x.dtype).tiny)  # faster than the inf-norm
    u = x / peak
    norm = torch.linalg.vector_norm(u, dim=1, keepdim=True).clamp_min_(1e-12)
    inverse = (peak * norm).reciprocal_().nan_to_num_(posinf=0.0)  # zero rows: 1/(tiny·eps) = inf -> 0
    return u.div_(norm), inverse


def unit_rows_backward(grad: Tensor, u: Tensor, inverse: Tensor) -> Tensor:
    """The gradient with respect to the rows before :func:`unit_with_inverse_norms`: ``(g - u<u, g>) / ‖x‖`` (in place)."""
    return grad.addcmul_(u, (u * grad).sum(dim=1, keepdim=True), value=-1.0).mul_(inverse)


class UnitRows(torch.autograd.Function):
    """:func:`unit_rows` as one autograd Function: ``forward(x, dtype)`` saves the unit rows and ``1/‖x_i‖``."""

    @staticmethod
    def forward(ctx, x, dtype):  # type: ignore[override]  # noqa: ANN001, ANN205
        """Normalise in the accumulation dtype and return the rows in ``dtype``."""
        u, inverse = unit_with_inverse_norms(x.detach().to(compute_dtype(x.dtype)))
        ctx.save_for_backward(u, inverse)
        ctx.x_dtype = x.dtype
        return u.to(dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001, ANN205
        """``(g - u<u, g>) / ‖x‖`` on a copy of the incoming gradient, in the input's dtype."""
        u, inverse = ctx.saved_tensors
        return unit_rows_backward(grad.to(u.dtype, copy=True), u, inverse).to(ctx.x_dtype), None


def row_norms(x: Tensor) -> Tensor:
    """Return the ``(B, 1)`` Euclidean norms of the rows of ``x`` in the accumulation dtype, without overflow.

    Computed as ``peak * ||x / peak||`` (``peak`` the row's largest magnitude), so a norm is
    infinite only when it exceeds the accumulation dtype itself.
    """
    peak, scaled = _peak_scaled(x)
    return peak * scaled.norm(dim=1, keepdim=True)


def common_scale(*tensors: Tensor) -> Tensor:
    """A power of two near the largest magnitude in ``tensors`` (1 when all are zero), detached.

    In the accumulation dtype. Dividing by it brings every value into [-2, 2] exactly (a
    power of two only moves the exponent), so sums of products of the scaled values do not
    overflow; the scale itself is finite.
    """
    dtype = compute_dtype(tensors[0].dtype)
    peak = torch.stack([t.detach().abs().amax().to(dtype) for t in tensors]).amax()
    exponent = torch.ceil(torch.log2(torch.where(peak > 0, peak, torch.ones_like(peak))))
    return torch.exp2(exponent.clamp(max=math.floor(math.log2(torch.finfo(dtype).max))))


class _Rescaled(torch.autograd.Function):
    """``x / scale``; backward multiplies by ``scale ** (power - 1)`` (the factor :class:`_Restored` omits)."""

    @staticmethod
    def forward(ctx, x, scale, power):  # type: ignore[override]  # noqa: ANN001, ANN205, D102
        ctx.save_for_backward(scale)
        ctx.power = power
        return x / scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001, ANN205, D102
        (scale,) = ctx.saved_tensors
        return _times_power(grad, scale, ctx.power - 1), None, None  # factor by factor: 0 stays 0


class _ScaledGradient(torch.autograd.Function):
    """The identity; backward multiplies by ``scale ** power`` (the factor :class:`_Restored` omits)."""

    @staticmethod
    def forward(ctx, x, scale, power):  # type: ignore[override]  # noqa: ANN001, ANN205, D102
        ctx.save_for_backward(scale)
        ctx.power = power
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001, ANN205, D102
        (scale,) = ctx.saved_tensors
        return _times_power(grad, scale, ctx.power), None, None


class _Restored(torch.autograd.Function):
    """``x * scale ** power``; backward passes the gradient on unscaled (:class:`_Rescaled` applies it)."""

    @staticmethod
    def forward(ctx, x, scale, power):  # type: ignore[override]  # noqa: ANN001, ANN205, D102
        return _times_power(x, scale, power)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001, ANN205, D102
        return grad, None, None


def _times_power(x: Tensor, scale: Tensor, power: int) -> Tensor:
    """``x * scale ** power`` one factor at a time, so it overflows only if the result does."""
    for _ in range(power):
        x = x * scale
    return x


def rescaled(x: Tensor, scale: Tensor, power: int) -> Tensor:
    """``x / scale`` for a term homogeneous of degree ``power`` in ``x`` that :func:`restored` scales back.

    A term ``f(x) = scale**power * f(x / scale)`` is computed as
    ``restored(f(rescaled(x, scale, power)), scale, power)``: the value overflows only if
    ``f(x)`` does, and the gradient ``scale**(power-1) * f'(x / scale)`` is formed at the
    input, so it overflows only if it does itself (a plain product would carry
    ``scale**power`` through the whole backward pass). ``scale`` is a constant (detached).
    """
    return _Rescaled.apply(x, scale.detach(), power)


def scaled_gradient(x: Tensor, scale: Tensor, power: int) -> Tensor:
    """``x`` itself, for a scale-invariant function of it inside a term that :func:`restored` scales back.

    Where :func:`rescaled` would overflow (``x / scale`` beyond the dtype) but only the
    direction of ``x`` matters, this carries the factor ``scale**power`` into the gradient.
    """
    return _ScaledGradient.apply(x, scale.detach(), power)


def restored(value: Tensor, scale: Tensor, power: int) -> Tensor:
    """``value * scale**power`` for a term computed from :func:`rescaled` inputs of the same ``power``."""
    return _Restored.apply(value, scale.detach(), power)


def extra_negatives(negatives: Tensor | MemoryQueue | None, like: Tensor, options: EngineOptions
                    ) -> Tensor | None:
    """Return the extra negatives (a tensor or a queue's keys) checked, cast to ``like`` and normalised."""
    if negatives is None:
        return None
    if isinstance(negatives, MemoryQueue):
        negatives = negatives.negatives()
    if options.validate_args or not isinstance(negatives, Tensor) or negatives.dim() != 2:
        negatives = check_embeddings(negatives, "negatives", finite=options.validate_args)
    if negatives.shape[1] != like.shape[1]:
        raise ValueError(
            f"negatives must have dimension {like.shape[1]} like the embeddings, "
            f"got shape {tuple(negatives.shape)}"
        )
    if negatives.shape[0] == 0:
        return None
    negatives = negatives.to(dtype=like.dtype, device=like.device)
    return unit_rows(negatives, options.rows_dtype(like)) if options.normalize else negatives


def dense_labels(labels: Tensor) -> Tensor:
    """Map arbitrary integer labels to ids >= 0 with equal labels equal (so ``NEGATIVE_ONLY`` matches none).

    Ids are positions in the sorted labels (:func:`~contrastive.engine.stats.label_ids`): no
    ``torch.unique``, so nothing reads from the device.
    """
    return label_ids(labels)[0]


def sample_labels(labels: Tensor | None, batch: int, device: torch.device, layout: BatchLayout | None = None
                  ) -> Tensor:
    """Return dense per-sample labels of the (global) batch: ``labels``, or one pair id per sample.

    With a ``layout`` they are the labels of the global batch (``(layout.total,)``): pair
    ids run over all ranks, and given labels are gathered before they are made dense, so
    that one class has one label on every rank.
    """
    total = batch if layout is None else layout.total
    if labels is None:
        return torch.arange(total, device=device)
    if layout is not None and layout.world_size > 1:
        labels = all_gather_rows(labels, layout)
    return labels if labels.dim() == 2 else dense_labels(labels)  # multi-hot rows are used as they are


def append_negatives(candidates: Tensor, labels: Tensor, negatives: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return ``candidates`` and ``labels`` followed by the extra ``negatives`` labelled ``NEGATIVE_ONLY``."""
    if negatives is None:
        return candidates, labels
    # multi-hot labels: an all-zero row, which shares no label with anyone
    fill = torch.full((negatives.shape[0], *labels.shape[1:]), NEGATIVE_ONLY if labels.dim() == 1 else 0,
                      dtype=labels.dtype, device=labels.device)
    return torch.cat([candidates, negatives]), torch.cat([labels, fill])


def multiview_stats(
    z: Tensor,
    labels: Tensor,
    layout: BatchLayout,
    n_views: int,
    anchors: int | None,
    negatives: Tensor | None,
    temperature: float | Tensor,
    sampler: Any,
    options: EngineOptions,
    positive_weighting: str = "binary",
) -> RowStats:
    """Row statistics of this rank's stacked views ``z`` against the stacked views of all ranks.

    ``labels`` are the global per-sample labels (:func:`sample_labels`). Rank r's block of
    candidates is its views stacked, ``[v1_r; v2_r; ...]``, in rank order, gathered with
    gradient; ``negatives`` (the same on every rank) follow them. ``anchors=None`` uses
    every local row as an anchor; an int the first ``anchors`` rows. A single process
    (one rank) without extra negatives is the symmetric problem: z against itself.
    Multi-hot ``labels`` ``(B, K)`` and ``positive_weighting`` go to :func:`row_stats`.
    """
    engine = {**options.engine(sampler), "positive_weighting": positive_weighting}
    single = layout.world_size == 1
    views = (n_views,) + (1,) * (labels.dim() - 1)  # multi-hot labels (B, K) repeat along rows
    if single:
        candidate_labels = labels.repeat(*views)
        if negatives is None and anchors is None:
            return row_stats(z, None, candidate_labels, temperature=temperature, **engine)
        candidates = z
    else:
        candidates = all_gather_rows(z, layout.scaled(n_views))
        candidate_labels = torch.cat([
            labels[start : start + n].repeat(*views)
            for start, n in zip(layout.offsets(), layout.sizes, strict=True)
        ])
    first = layout.scaled(n_views).offset
    n_anchor = z.shape[0] if anchors is None else anchors
    anchor_labels = candidate_labels[first : first + n_anchor]
    index = first + torch.arange(n_anchor, device=z.device)
    candidates, candidate_labels = append_negatives(candidates, candidate_labels, negatives)
    return row_stats(z[:n_anchor], candidates, anchor_labels, candidate_labels, anchor_index=index,
                     temperature=temperature, **engine)


class EngineLoss(torch.nn.Module):
    """Base class of engine-based losses: holds the temperature, the sampler and the :class:`EngineOptions`.

    ``gather`` (``"auto"``, ``True`` or ``False``) follows :mod:`contrastive.distributed`:
    ``auto`` gathers candidates from all ranks when more than one is initialised.
    """

    def __init__(
        self,
        temperature: float | Tensor | None = 0.1,
        *,
        normalize: bool = True,
        sampler: Any = "uniform",
        backend: str = "auto",
        block_size: int | None = None,
        gather: str | bool = "auto",
        validate_args: bool = True,
        no_positive: str = "zero",
        decoupled: bool = False,
    ) -> None:
        """Check and store the options shared by all engine-based losses (see :class:`EngineOptions`).

        ``temperature=None``: a subclass derives it (CLIP from its logit scale).
        """
        super().__init__()
        self.options = EngineOptions(normalize, sampler, backend, block_size, gather, validate_args, no_positive,
                                     decoupled)
        self.sampler = self.options.resolved_sampler
        if temperature is not None:
            self.temperature = check_temperature(temperature)

    @property
    def normalize(self) -> bool:
        """Whether embeddings are L2-normalised first."""
        return self.options.normalize

    @property
    def backend(self) -> str:
        """The engine backend option."""
        return self.options.backend

    @property
    def validate_args(self) -> bool:
        """Whether inputs are checked (reads from the device)."""
        return self.options.validate_args

    def extra_repr(self) -> str:
        """Show the options."""
        t = self.temperature
        t = f"{float(t.detach()):.4g} (tensor)" if isinstance(t, Tensor) else t
        o = self.options
        decoupled = ", decoupled=True" if o.decoupled else ""
        return (f"temperature={t}, normalize={o.normalize}, backend={o.backend!r}, gather={o.gather!r}, "
                f"validate_args={o.validate_args}{decoupled}")


__all__ = ["EngineLoss", "EngineOptions", "all_anchors_valid", "anchor_losses", "engine_options", "mean_over_valid", "world"]
