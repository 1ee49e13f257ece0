"""Spectral contrastive loss (HaoChen et al., 2021) in O(B·D + D²) memory."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from contrastive._validation import check_embeddings
from contrastive.distributed import agreed_layout, all_reduce_max, all_reduce_sum, check_gather, should_gather
from contrastive.engine.reference import compute_dtype
from contrastive.hookspecs import Register, hookimpl
from contrastive.losses.base import (
    _times_power,
    common_scale,
    rescaled,
    restored,
    row_norms,
    scaled_gradient,
    unit_rows,
)

__all__ = [
    "SpectralContrastiveLoss",
    "SpectralStatistics",
    "clip_norm",
    "spectral_contrastive_loss",
    "spectral_loss_from_statistics",
    "spectral_statistics",
    "sum_across_ranks",
]


class SpectralStatistics(NamedTuple):
    """Additive batch statistics that determine the spectral contrastive loss.

    Every field is a sum over the samples of a batch, so statistics of shards
    (micro-batches, or ranks) add up to the statistics of the whole batch. Across
    ranks, :func:`sum_across_ranks` sums them with an autograd-aware all-reduce, so
    that every rank's samples receive the gradient of the global-batch loss; the cost
    is one all-reduce of 3 + 2·D² numbers per step.
    """

    count: torch.Tensor
    """Number of positive pairs B (0-d tensor)."""
    pos_sum: torch.Tensor
    """Σ_i <z1_i, z2_i> (0-d tensor)."""
    pos_sq_sum: torch.Tensor
    """Σ_i <z1_i, z2_i>² (0-d tensor)."""
    gram1: torch.Tensor
    """Z1ᵀZ1 = Σ_i z1_i z1_iᵀ, shape (D, D)."""
    gram2: torch.Tensor
    """Z2ᵀZ2 = Σ_i z2_i z2_iᵀ, shape (D, D)."""


def clip_norm(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Rescale each row of ``z`` whose Euclidean norm exceeds ``sqrt(mu)`` down to norm ``sqrt(mu)``.

    The norm is computed without overflow (``contrastive.losses.base.row_norms``), so a
    row of any finite magnitude is clipped to ``sqrt(mu)``, never to zero.
    """
    _check_mu(mu)
    return _clip(z, _too_long(z, mu), mu)


def _too_long(z: torch.Tensor, mu: float) -> torch.Tensor:
    """The ``(B, 1)`` mask of the rows of ``z`` longer than √mu (norms computed without overflow)."""
    return row_norms(z.detach()) > math.sqrt(mu)


def _clip(z: torch.Tensor, too_long: torch.Tensor, mu: float) -> torch.Tensor:
    """``z`` with the ``too_long`` rows rescaled to norm √mu."""
    return torch.where(too_long, math.sqrt(mu) * unit_rows(z), z)


def spectral_statistics(
    z1: torch.Tensor,
    z2: torch.Tensor,
    mu: float | None = None,
    validate_args: bool = True,
    *,
    scale: float | torch.Tensor = 1.0,
) -> SpectralStatistics:
    """Return the additive statistics of the positive pairs ``(z1_i, z2_i)``, after the optional clip.

    They are computed in the accumulation dtype (float32 for half-precision input). ``scale``
    divides the rows first (after the clip): statistics of ``z / scale`` keep large inputs
    from overflowing, and :func:`spectral_loss_from_statistics` with the same ``scale``
    undoes it. Statistics meant to be added must share one ``scale``.
    """
    _check_pair(z1, z2, min_rows=1, finite=validate_args)  # a shard may hold a single pair
    z1, z2 = _prepared(z1, z2, mu)
    return _statistics(z1 / scale, z2 / scale)


def _prepared(z1: torch.Tensor, z2: torch.Tensor, mu: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cast to the accumulation dtype and apply the optional norm clip."""
    dtype = compute_dtype(z1.dtype)
    z1, z2 = z1.to(dtype), z2.to(dtype)
    if mu is not None:
        z1, z2 = clip_norm(z1, mu), clip_norm(z2, mu)
    return z1, z2


def _clipped(z: torch.Tensor, too_long: torch.Tensor | None, mu: float | None, scale: torch.Tensor, power: int
             ) -> torch.Tensor:
    """The clipped rows of ``z`` over ``scale``, for a term of degree ``power`` (see :func:`rescaled`).

    A ``too_long`` row (longer than √mu) becomes √mu / scale times its direction, taken from
    ``z`` itself (``z / scale`` may overflow where ``z`` is far longer than √mu); the others are
    ``z / scale``, bounded by the scale. Both carry the term's gradient factor.
    """
    w = rescaled(z, scale, power)  # may be inf on clipped rows: not selected there, zero gradient
    if mu is None:
        return w
    # √mu / scale is at most ~2√D where a row is clipped (scale bounds the clipped entries); 0 elsewhere
    factor = torch.where(too_long, math.sqrt(mu) / scale, torch.zeros_like(scale))
    return torch.where(too_long, factor * unit_rows(scaled_gradient(z, scale, power)), w)


def _statistics(z1: torch.Tensor, z2: torch.Tensor) -> SpectralStatistics:
    pos = (z1 * z2).sum(dim=1)
    return SpectralStatistics(
        count=torch.tensor(float(z1.shape[0]), dtype=z1.dtype, device=z1.device),
        pos_sum=pos.sum(),
        pos_sq_sum=pos.square().sum(),
        gram1=z1.T @ z1,
        gram2=z2.T @ z2,
    )


def sum_across_ranks(stats: SpectralStatistics) -> SpectralStatistics:
    """Sum ``stats`` over all ranks in one all-reduce with gradient (see :mod:`contrastive.distributed`).

    Backward sums the gradients over ranks, so a loss computed from the result on every
    rank gives each rank ``world_size`` times the global-batch gradient of its own rows,
    which DDP's averaging turns into exactly the global-batch gradient.
    """
    scalars = torch.stack([stats.count, stats.pos_sum, stats.pos_sq_sum])
    flat = torch.cat([scalars, stats.gram1.flatten(), stats.gram2.flatten()])
    total = all_reduce_sum(flat)
    d = stats.gram1.shape[0]
    return SpectralStatistics(total[0], total[1], total[2], *total[3:].view(2, d, d).unbind(0))


def spectral_loss_from_statistics(
    stats: SpectralStatistics, validate_args: bool = True, *, scale: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Combine (possibly summed) :class:`SpectralStatistics` into the spectral contrastive loss.

    ``scale``: the statistics are of the rows divided by ``scale`` (see :func:`spectral_statistics`);
    the loss of the unscaled rows is returned, infinite only if it exceeds the dtype.
    ``validate_args`` checks (reading the count from the device) that there are 2 pairs or more.
    """
    _check_count(stats.count, validate_args)
    positive, negative = _terms(stats)
    # c² (positive + c² negative): overflows only if the loss does (no inf - inf)
    return _times_power(positive + _times_power(negative, scale, 2), scale, 2)


def _check_count(n: torch.Tensor, validate_args: bool) -> None:
    if validate_args and float(n) < 2:
        raise ValueError(
            "the spectral contrastive loss needs at least 2 pairs for its negative term, "
            f"got count={float(n)}"
        )


def _terms(stats: SpectralStatistics) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive term (degree 2 in the rows) and the negative term (degree 4) of the loss."""
    n = stats.count
    # Σ_{i,j} <z1_i, z2_j>² = ||Z1 Z2ᵀ||_F² = <Z1ᵀZ1, Z2ᵀZ2>_F; remove the i = j terms.
    all_pairs = (stats.gram1 * stats.gram2).sum()
    return -2.0 * stats.pos_sum / n, (all_pairs - stats.pos_sq_sum) / (n * (n - 1))


def spectral_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    mu: float | None = None,
    gather: str | bool = "auto",
    *,
    validate_args: bool = True,
) -> torch.Tensor:
    r"""Spectral contrastive loss of two views; see :class:`SpectralContrastiveLoss` for the formula.

    ``validate_args=False`` skips the checks that read from the device (finite inputs).
    """
    distributed = should_gather(gather)
    # a shard may hold one pair; the global batch needs two (checked on the sums)
    def check() -> tuple[torch.Tensor, torch.Tensor]:
        if mu is not None:
            _check_mu(mu)
        return _check_pair(z1, z2, min_rows=1 if distributed else 2, finite=validate_args)

    (z1, z2), _ = agreed_layout(check, lambda pair: pair[0], "z1", gather)
    z1, z2 = _prepared(z1, z2, None)
    masks = [None if mu is None else _too_long(z, mu) for z in (z1, z2)]
    # the scale of the clipped rows
    scale = common_scale(*(z.detach() if m is None else _clip(z.detach(), m, mu) for z, m in zip((z1, z2), masks)))
    if distributed:
        scale = all_reduce_max(scale)  # one scale for the statistics of every rank
    # statistics of the clipped rows / scale; the positive term is of degree 2, the negative of
    # degree 4 (see rescaled); the clip acts on the scaled rows, so its backward sees small gradients
    a1, a2 = (_clipped(z, m, mu, scale, 2) for z, m in zip((z1, z2), masks))
    b1, b2 = (_clipped(z, m, mu, scale, 4) for z, m in zip((z1, z2), masks))
    stats = _statistics(b1, b2)._replace(pos_sum=(a1 * a2).sum())
    if distributed:
        stats = sum_across_ranks(stats)
    _check_count(stats.count, validate_args and distributed)
    positive, negative = _terms(stats)
    # c² (positive + c² negative); rescaled() gave each term's inputs its own gradient factor
    return restored(positive + restored(negative, scale, 2), scale, 2)


class SpectralContrastiveLoss(torch.nn.Module):
    r"""Spectral contrastive loss of HaoChen, Wei, Gaidon and Ma (NeurIPS 2021).

    For a batch of B positive pairs :math:`(z^{(1)}_i, z^{(2)}_i)`,

    .. math::

        \mathcal{L} = -\frac{2}{B}\sum_{i=1}^{B} \langle z^{(1)}_i, z^{(2)}_i\rangle
            + \frac{1}{B(B-1)}\sum_{i\neq j} \langle z^{(1)}_i, z^{(2)}_j\rangle^2 ,

    the empirical form of :math:`-2\,\mathbb{E}[f(x)^\top f(x^+)] + \mathbb{E}[(f(x)^\top f(x^-))^2]`
    (HaoChen et al., "Provable Guarantees for Self-Supervised Deep Learning with
    Spectral Contrastive Loss", arXiv:2106.04156). The squared term is computed as
    :math:`\langle Z_1^\top Z_1, Z_2^\top Z_2\rangle_F - \sum_i \langle z^{(1)}_i, z^{(2)}_i\rangle^2`,
    in O(B·D + D²) memory; no B x B matrix is formed. The statistics involved are
    sums over samples (:func:`spectral_statistics`), so they can be all-reduced
    across ranks before :func:`spectral_loss_from_statistics`.

    **Distributed** (``gather``, see :mod:`contrastive.distributed`): nothing is
    gathered; the statistics are all-reduced with gradient (:func:`sum_across_ranks`)
    and every rank returns the loss :math:`\mathcal{L}` of the global batch. Its backward
    gives each rank :math:`W\,\partial\mathcal{L}/\partial z_r` for its own rows, so DDP's
    gradient averaging gives the exact gradient of the global batch. Local batch sizes may
    differ (one pair per rank is enough).

    Args:
        mu: optional norm clip of the authors' implementation: rows with
            :math:`\|z\| > \sqrt{\mu}` are rescaled to norm :math:`\sqrt{\mu}`
            before the loss. ``None`` (default) disables it.
        gather: ``"auto"`` (all-reduce when more than one rank is initialised), ``True`` or ``False``.
        validate_args: check the inputs (finite values); ``False`` reads nothing from the device.
    """

    def __init__(self, mu: float | None = None, gather: str | bool = "auto", *, validate_args: bool = True) -> None:
        """Store the optional norm clip ``mu`` and the ``gather`` and ``validate_args`` options."""
        super().__init__()
        if mu is not None:
            _check_mu(mu)
        self.mu = mu
        self.gather = check_gather(gather)
        self.validate_args = bool(validate_args)

    def forward(self, *views: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Return the spectral contrastive loss of exactly two views, each (B, D)."""
        z1, z2 = _two_views("spectral", views, labels)
        return spectral_contrastive_loss(z1, z2, mu=self.mu, gather=self.gather, validate_args=self.validate_args)

    def extra_repr(self) -> str:
        """Show ``mu`` in the module's repr."""
        return f"mu={self.mu}"


def _two_views(
    name: str, views: tuple[torch.Tensor, ...], labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if len(views) != 2:
        raise ValueError(f"the {name} loss takes exactly 2 views, got {len(views)} views")
    if labels is not None:
        raise ValueError(
            f"the {name} loss pairs row i of view 1 with row i of view 2 and takes no labels; "
            f"got labels={labels!r}, pass labels=None"
        )
    return views[0], views[1]


def _check_pair(z1: torch.Tensor, z2: torch.Tensor, min_rows: int = 2, finite: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    check_embeddings(z1, "z1", finite)  # 2-D, floating, (finite: read from the device) finite
    check_embeddings(z2, "z2", finite)
    if z1.shape != z2.shape:
        raise ValueError(
            f"the two views must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < min_rows:
        raise ValueError(f"views need at least {min_rows} rows (pairs), got B={z1.shape[0]}")
    return z1, z2


def _check_mu(mu: float) -> None:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu <= 0:
        raise ValueError(f"mu must be a positive finite number or None, got mu={mu!r}")


@hookimpl
def register_losses(register: Register) -> None:
    """Register the ``spectral`` loss."""
    register("spectral", SpectralContrastiveLoss)
