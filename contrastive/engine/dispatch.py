"""``row_stats`` and ``dual_row_stats``: the engine's entry points, with input checks and backend dispatch.

Self-similarity is explicit: ``row_stats(z)`` (``candidates=None``) is z against itself,
each anchor's own column excluded; ``row_stats(z, z)`` is two sets that happen to be equal.

Every choice of algorithm is made from Python-known values: the tile edge and whether a
small problem keeps its tiles for backward from the shapes, direct or shifted
exponentials from ``norm_bound`` and a float temperature (or, with ``validate_args=True``,
from the values the checks read anyway). With ``validate_args=False`` nothing in forward
or backward reads a value back from the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from contrastive._validation import check_choice, check_temperature
from contrastive.engine.chunked import ChunkedStats
from contrastive.engine.dense import dense_all_lse
from contrastive.engine.multilabel import WEIGHTINGS, MultiLabelStructure, multi_hot, pack_bits
from contrastive.engine.reference import compute_dtype, reference_row_stats
from contrastive.engine.stats import LabelStructure, RowStats
from contrastive.engine.tiles import TermSpec, direct_is_safe
from contrastive.engine.triton import (
    DualTritonRowStats,
    SymmetricTritonRowStats,
    TritonRowStats,
    auto_prefers_triton,
    triton_available,
)

Tensor = torch.Tensor

BACKENDS = ("auto", "reference", "chunked", "triton")
#: Tile edge of the chunked engine for problems too large to keep their tiles.
DEFAULT_BLOCK = 512
#: Tile edge from :data:`LARGE_PROBLEM` on: the matmuls of 1,024-wide tiles run faster (measured on
#: a 2-core CPU, D = 128: 174 against 101 GFLOP/s forward), while a symmetric problem's
#: upper-triangle saving favours more, smaller tiles until it has many of them.
LARGE_BLOCK = 1024
#: The smaller side from which a problem takes :data:`LARGE_BLOCK` tiles: two sets (CLIP's
#: 2N = 4,096: 74 -> 59 ms; 16,384: 926 -> 756 ms) and the symmetric problem (2N = 8,192:
#: 412 -> 381 ms; at 2,048 the 512 tiles win, 47 against 56 ms).
LARGE_PROBLEM = {"rows": 2048, "symmetric": 8192}
#: Problems whose tiles hold at most this many elements (all statistics together) are computed
#: as one tile kept for backward: no recomputation, the cost of a materialised loss.
KEEP_ELEMENTS = 2**18
#: Joint statistics of matrices with at most this many entries are formed as one matrix
#: (:mod:`contrastive.engine.dense`); above, the tiles' memory stays O(N).
DENSE_ELEMENTS = 2**18


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """Return the concrete backend for ``backend`` on ``device`` for inputs of ``dtype``.

    ``auto`` is ``triton`` for fp32/bf16/fp16 CUDA tensors when Triton imports, else ``chunked``
    (CPU tensors never reach a kernel through ``auto``, even under ``TRITON_INTERPRET=1``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" and not triton_available():
        raise ValueError(
            "backend='triton' needs the triton package (Linux x86-64: pip install triton); "
            "use backend='chunked' or 'auto'"
        )
    if backend == "auto":
        return "triton" if dtype is not None and auto_prefers_triton(device, dtype) else "chunked"
    return backend


def check_block_size(block_size: object) -> int | None:
    """Return ``block_size`` if it is a positive int or None (automatic); else raise ValueError."""
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive int or None (automatic), got {block_size!r}")
    return block_size


def plan_tiles(block_size: int | None, m: int, n: int, terms: int, symmetric: bool = False) -> tuple[int, bool]:
    """Return ``(tile edge, keep)``: one kept tile for small problems, else 512 or (large ones) 1,024 tiles."""
    if block_size is not None:
        return block_size, False
    if m * n * terms <= KEEP_ELEMENTS:
        return max(1, m, n), True
    large = min(m, n) >= LARGE_PROBLEM["symmetric" if symmetric else "rows"]
    return (LARGE_BLOCK if large else DEFAULT_BLOCK), False


def dense_fits(block_size: int | None, m: int, n: int) -> bool:
    """Whether joint statistics take the one-tile fast path: automatic tiles, a small matrix, >= 2 columns."""
    return block_size is None and n >= 2 and m * n <= DENSE_ELEMENTS


def _check_shapes(
    anchors: Tensor,
    candidates: Tensor | None,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    anchor_index: Tensor | None,
    exponents: Sequence[float],
) -> None:
    """Raise ValueError naming the first argument whose shape or dtype is inconsistent (no device reads)."""
    for name, x in (("anchors", anchors), ("candidates", candidates)):
        if x is not None and (not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point()):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            dtype = x.dtype if isinstance(x, Tensor) else None
            raise ValueError(f"{name} must be a 2-D floating tensor, got shape {shape} and dtype {dtype}")
    other = anchors if candidates is None else candidates
    if anchors.shape[1] != other.shape[1]:
        raise ValueError(
            "anchors and candidates must share their last dimension, "
            f"got {anchors.shape[1]} and {other.shape[1]}"
        )
    if anchors.dtype != other.dtype:
        raise ValueError(f"anchors and candidates must share a dtype, got {anchors.dtype} and {other.dtype}")
    checks = [("anchor_labels", anchor_labels, anchors.shape[0]), ("candidate_labels", candidate_labels,
                                                                   other.shape[0])]
    if isinstance(anchor_labels, Tensor) and anchor_labels.dim() == 2:
        _check_multi_hot(checks)
        checks = []
    if anchor_index is not None:
        checks.append(("anchor_index", anchor_index, anchors.shape[0]))
    for name, x, n in checks:
        if not isinstance(x, Tensor) or x.shape != (n,) or x.dtype != torch.long:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name} must be an int64 tensor of shape ({n},), got shape {shape} and dtype "
                f"{getattr(x, 'dtype', None)}"
            )
    if len(exponents) == 0 or not all(math.isfinite(g) for g in exponents):
        raise ValueError(f"exponents must be a non-empty sequence of finite floats, got {tuple(exponents)!r}")


def _check_multi_hot(checks: list[tuple[str, object, int]]) -> None:
    """Raise ValueError unless both label tensors are multi-hot ``(n, K)`` rows with one K (no device reads)."""
    width = checks[0][1].shape[1]
    for name, x, n in checks:
        if (not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] != n or x.shape[1] != width
                or x.is_complex()):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name} must be a multi-hot tensor of shape ({n}, {width}) like anchor_labels (or both "
                f"int64 of shape (n,)), got shape {shape} and dtype {getattr(x, 'dtype', None)}"
            )


def _check_values(anchor_index: Tensor | None, num_candidates: int, temperature: float | Tensor,
                  anchors_dtype: torch.dtype) -> None:
    """The checks that read from the device (``validate_args=True``): index range and temperature."""
    if anchor_index is not None and anchor_index.numel():
        low, high = torch.aminmax(anchor_index)
        if int(high) >= num_candidates or int(low) < -1:
            raise ValueError(f"anchor_index must lie in [-1, {num_candidates - 1}]")
    check_temperature(temperature)
    if isinstance(temperature, Tensor):
        check_inverse_temperature(float(temperature.detach()), anchors_dtype)


#: 1/τ may be at most the accumulation dtype's largest value over this: sums of up to 2^32
#: similarities (a positive sum over many rows) then stay finite.
INVERSE_TEMPERATURE_HEADROOM = 2.0**32


def check_inverse_temperature(temperature: float, dtype: torch.dtype) -> None:
    """Raise ValueError when 1/τ comes within 2^32 of overflowing the accumulation dtype (a Python check)."""
    largest = torch.finfo(compute_dtype(dtype)).max / INVERSE_TEMPERATURE_HEADROOM
    if 1.0 / temperature > largest:
        raise ValueError(
            f"temperature={temperature!r} is too small: 1/temperature overflows {compute_dtype(dtype)} "
            f"(the accumulation dtype of {dtype} inputs) in sums of similarities; use a temperature of "
            f"at least {1.0 / largest:.3g}"
        )


def _inverse_temperature(temperature: float | Tensor, like: Tensor) -> Tensor:
    """Return 1/τ as a 0-d tensor in the accumulation dtype of ``like`` (differentiable if τ is)."""
    dtype = compute_dtype(like.dtype)
    if isinstance(temperature, Tensor):
        return 1.0 / temperature.reshape(()).to(device=like.device, dtype=dtype)
    return torch.tensor(1.0 / temperature, dtype=dtype, device=like.device)


def _similarity_bound(
    anchors: Tensor, candidates: Tensor | None, temperature: float | Tensor, norm_bound: float | None,
    validate_args: bool,
) -> float | None:
    """A Python-known bound of ``|s_ij|``, or None when it would have to be read from the device.

    ``norm_bound`` bounds the row norms (1 for normalised embeddings); a float temperature is
    known. With ``validate_args`` the checks read from the device anyway, so the row norms and
    a tensor temperature are read too (two reads, whatever the size).
    """
    if isinstance(temperature, Tensor):
        if not validate_args:
            return None
        temperature = float(temperature.detach())
    if norm_bound is not None:
        return norm_bound * norm_bound / temperature
    if not validate_args or anchors.numel() == 0:
        return None
    other = anchors if candidates is None else candidates
    if other.numel() == 0:
        return None
    norms = torch.stack([anchors.detach().norm(dim=1).max(), other.detach().norm(dim=1).max()]).double()
    return float(norms.prod()) / temperature


def _prepare(
    anchors: Tensor, candidates: Tensor | None, anchor_labels: Tensor | None, candidate_labels: Tensor | None,
    anchor_index: Tensor | None, temperature: float | Tensor, exponents: Sequence[float], validate_args: bool,
) -> tuple[Tensor, Tensor, tuple[float, ...], float | Tensor]:
    """Defaults and checks shared by both entry points; return the labels, the exponents and τ as floats."""
    if anchor_labels is None:
        anchor_labels = torch.arange(anchors.shape[0], device=anchors.device)
    if candidate_labels is None:
        candidate_labels = anchor_labels
    exponents = tuple(float(g) for g in exponents)
    _check_shapes(anchors, candidates, anchor_labels, candidate_labels, anchor_index, exponents)
    if not isinstance(temperature, Tensor):
        temperature = check_temperature(temperature)
        check_inverse_temperature(temperature, anchors.dtype)
    if validate_args:
        _check_values(anchor_index, (anchors if candidates is None else candidates).shape[0], temperature,
                      anchors.dtype)
    return anchor_labels, candidate_labels, exponents, temperature


def _term_spec(
    anchors: Tensor, candidates: Tensor | None, temperature: float | Tensor, exponents: tuple[float, ...],
    joint: bool, norm_bound: float | None, validate_args: bool,
) -> TermSpec:
    """What the tiles compute, with direct exponentials where a Python-known bound allows them."""
    bound = _similarity_bound(anchors, candidates, temperature, norm_bound, validate_args)
    return TermSpec(exponents, joint, direct_is_safe(bound, exponents, compute_dtype(anchors.dtype)))


def row_stats(
    anchors: Tensor,
    candidates: Tensor | None = None,
    anchor_labels: Tensor | None = None,
    candidate_labels: Tensor | None = None,
    *,
    anchor_index: Tensor | None = None,
    temperature: float | Tensor = 1.0,
    exponents: Sequence[float] = (1.0,),
    joint: bool = False,
    norm_bound: float | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    validate_args: bool = True,
    positive_weighting: str = "binary",
) -> RowStats:
    r"""Return the :class:`RowStats` of ``s = anchors · candidatesᵀ / temperature``.

    ``candidates=None`` is the anchors against themselves, each anchor's own column left out
    (``candidate_labels`` and ``anchor_index`` must then be None). Otherwise
    ``anchor_index[i]`` is anchor i's own column among the candidates (left out of its
    positives) or -1, and None means "no anchor among the candidates". ``anchor_labels``
    default to one label per anchor; ``candidate_labels`` to ``anchor_labels`` (which then
    must fit). Candidates whose label no anchor carries are pure negatives (e.g. a queue).

    Labels of shape ``(M, K)`` and ``(N, K)`` are multi-hot rows (any dtype; nonzero: the
    sample carries that label): a candidate sharing at least one label with the anchor is a
    positive, one sharing none a negative, and the anchor's own column is in neither (a row
    without labels has no positive). ``positive_weighting="jaccard"`` then weights positive j
    of anchor i by :math:`|A_i \cap A_j| / |A_i \cup A_j|` in ``pos_sum`` and reports the
    weights' sums in ``pos_weight`` (see ``contrastive.engine.multilabel``); integer labels
    ignore it (two samples of one class share their one label fully).

    ``joint=True`` computes only ``all_lse`` (every candidate but the anchor itself, the
    uniform denominator: no label mask inside the tiles) instead of ``neg_lse``/``pos_lse``.
    ``norm_bound`` is a known bound of the row norms (1 for normalised embeddings): with a
    float temperature it lets the engine use unshifted exponentials without reading the data.
    ``validate_args=False`` skips every check that reads from the device.
    """
    symmetric = candidates is None
    if symmetric and (candidate_labels is not None or anchor_index is not None):
        raise ValueError(
            "candidates=None means the anchors against themselves (own column excluded): "
            "candidate_labels and anchor_index must then be None"
        )
    check_choice(positive_weighting, "positive_weighting", WEIGHTINGS)
    anchor_labels, candidate_labels, exponents, temperature = _prepare(
        anchors, candidates, anchor_labels, candidate_labels, anchor_index, temperature, exponents, validate_args
    )
    other = anchors if symmetric else candidates
    index = anchor_index
    if symmetric:
        index = torch.arange(anchors.shape[0], device=anchors.device)
    elif index is None:
        index = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    name = resolve_backend(backend, anchors.device, anchors.dtype)
    if name == "reference":
        stats = reference_row_stats(anchors, other, anchor_labels, candidate_labels, index, temperature,
                                    exponents, positive_weighting)
        return stats._replace(neg_lse=None, pos_lse=None) if joint else stats._replace(all_lse=None)
    if anchor_labels.dim() == 2:
        return _multilabel_row_stats(anchors, candidates, anchor_labels, candidate_labels, index, temperature,
                                     exponents, joint, norm_bound, name, block_size, validate_args,
                                     positive_weighting)
    structure = LabelStructure.of(anchor_labels, None if symmetric else candidate_labels, anchor_index)
    counts = structure.counts()
    inv_tau = _inverse_temperature(temperature, anchors)
    if name == "triton":
        return _triton_row_stats(anchors, candidates, anchor_labels, candidate_labels, index, inv_tau,
                                 exponents, joint, block_size, counts)
    self_col = None
    if structure.self_positive is not None:
        self_col = torch.where(structure.self_positive, anchor_index, torch.full_like(anchor_index, -1))
    if joint and dense_fits(block_size, anchors.shape[0], other.shape[0]):
        spec = TermSpec(exponents, joint, False)
        lse, _ = dense_all_lse(anchors, candidates, inv_tau, self_col)
        return _stats(lse[:, None], anchors, candidates, anchor_index, inv_tau, spec, structure, counts)
    spec = _term_spec(anchors, candidates, temperature, exponents, joint, norm_bound, validate_args)
    block, keep = plan_tiles(check_block_size(block_size), anchors.shape[0], other.shape[0], len(spec.gammas),
                             symmetric)
    # a symmetric problem's columns carry the rows' labels (one tensor, passed once)
    labels = (None, None) if joint else (anchor_labels, None if symmetric else candidate_labels)
    lse = ChunkedStats.apply(anchors, candidates, inv_tau, *labels, self_col, spec,
                             "symmetric" if symmetric else "rows", block, keep)
    return _stats(lse, anchors, candidates, anchor_index, inv_tau, spec, structure, counts)


def _multilabel_row_stats(
    anchors: Tensor, candidates: Tensor | None, anchor_labels: Tensor, candidate_labels: Tensor, index: Tensor,
    temperature: float | Tensor, exponents: tuple[float, ...], joint: bool, norm_bound: float | None, name: str,
    block_size: int | None, validate_args: bool, weighting: str,
) -> RowStats:
    """:func:`row_stats` of multi-hot labels (chunked or Triton): the own column is in neither set."""
    symmetric, dtype = candidates is None, compute_dtype(anchors.dtype)
    other = anchors if symmetric else candidates
    m, n = anchors.shape[0], other.shape[0]
    block = check_block_size(block_size)
    a_hot = multi_hot(anchor_labels, dtype)
    c_hot = a_hot if symmetric else multi_hot(candidate_labels, dtype)
    structure = MultiLabelStructure(a_hot, c_hot, index, weighting, plan_tiles(block, m, n, 1)[0])
    pos_count, neg_count, pos_weight = structure.counts()
    inv_tau = _inverse_temperature(temperature, anchors)
    if name == "triton":
        split = (1.0,) if joint else exponents
        a_bits = pack_bits(anchor_labels)
        if symmetric:
            out = SymmetricTritonRowStats.apply(anchors, a_bits, inv_tau, split, block)
        else:
            c_bits = pack_bits(candidate_labels)
            out = TritonRowStats.apply(anchors, candidates, a_bits, c_bits, index, inv_tau, split, block)
        neg_lse, pos_lse, pos_sum = out
        if weighting != "binary":  # the kernels sum the positives unweighted
            pos_sum = structure.positive_sums(anchors, other, inv_tau)
        stats = RowStats(neg_lse, pos_lse, pos_sum, pos_count, neg_count, split, None, pos_weight)
        return _joined(stats, joint)
    self_col = None if symmetric else index
    if joint and dense_fits(block, m, n):
        spec = TermSpec(exponents, joint, False)
        lse = dense_all_lse(anchors, candidates, inv_tau, self_col)[0][:, None]
    else:
        spec = _term_spec(anchors, candidates, temperature, exponents, joint, norm_bound, validate_args)
        tile, keep = plan_tiles(block, m, n, len(spec.gammas), symmetric)
        labels = (None, None) if joint else (a_hot, None if symmetric else c_hot)
        lse = ChunkedStats.apply(anchors, candidates, inv_tau, *labels, self_col, spec,
                                 "symmetric" if symmetric else "rows", tile, keep)
    pos_sum = structure.positive_sums(anchors, other, inv_tau)
    if joint:
        return RowStats(None, None, pos_sum, pos_count, neg_count, spec.exponents, lse[:, 0], pos_weight)
    e = len(spec.exponents)
    return RowStats(lse[:, :e], lse[:, e], pos_sum, pos_count, neg_count, spec.exponents, None, pos_weight)


def _stats(lse: Tensor, anchors: Tensor, candidates: Tensor | None, anchor_index: Tensor | None,
           inv_tau: Tensor, spec: TermSpec, structure: LabelStructure, counts: tuple[Tensor, Tensor]
           ) -> RowStats:
    """Assemble :class:`RowStats` from the chunked engine's ``(M, K)`` log-sum-exps."""
    dtype = compute_dtype(anchors.dtype)
    pos_sum = structure.positive_sums(anchors.to(dtype), None if candidates is None else candidates.to(dtype),
                                      anchor_index, inv_tau)
    if spec.joint:
        return RowStats(None, None, pos_sum, *counts, spec.exponents, lse[:, 0])
    e = len(spec.exponents)
    return RowStats(lse[:, :e], lse[:, e], pos_sum, *counts, spec.exponents)


def _triton_row_stats(anchors: Tensor, candidates: Tensor | None, anchor_labels: Tensor,
                      candidate_labels: Tensor, index: Tensor, inv_tau: Tensor, exponents: tuple[float, ...],
                      joint: bool, block_size: int | None, counts: tuple[Tensor, Tensor]) -> RowStats:
    """Row statistics from the fused kernels (joint statistics are combined from the split ones)."""
    exponents = (1.0,) if joint else exponents
    if candidates is None:
        out = SymmetricTritonRowStats.apply(anchors, anchor_labels, inv_tau, exponents, block_size)
    else:
        out = TritonRowStats.apply(anchors, candidates, anchor_labels, candidate_labels, index, inv_tau,
                                   exponents, block_size)
    return _joined(RowStats(*out, *counts, exponents), joint)


def _joined(stats: RowStats, joint: bool) -> RowStats:
    """Return ``stats`` in joint form (``all_lse`` from ``neg_lse`` and ``pos_lse``) when ``joint``."""
    if not joint:
        return stats
    neg, pos = stats.neg_lse_at(1.0), stats.pos_lse
    # a line with no candidate at all stays -inf with a zero (not NaN) gradient
    empty = torch.isneginf(neg) & torch.isneginf(pos)
    zero = torch.zeros((), dtype=neg.dtype, device=neg.device)
    joined = torch.logaddexp(torch.where(empty, zero, neg), pos)
    return stats._replace(neg_lse=None, pos_lse=None, all_lse=torch.where(empty, neg, joined))


def dual_row_stats(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor | None = None,
    candidate_labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 1.0,
    exponents: Sequence[float] = (1.0,),
    joint: bool = False,
    norm_bound: float | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    validate_args: bool = True,
) -> tuple[RowStats, RowStats]:
    """Return the :class:`RowStats` of anchors against candidates and of candidates against anchors.

    Both directions of one similarity matrix with no self column on either side, as CLIP's
    image-to-text and text-to-image terms: equal to two :func:`row_stats` calls (the second
    with the roles swapped), but each tile is formed once for both directions and one
    backward serves both. Options as in :func:`row_stats`.
    """
    anchor_labels, candidate_labels, exponents, temperature = _prepare(
        anchors, candidates, anchor_labels, candidate_labels, None, temperature, exponents, validate_args
    )
    if anchor_labels.dim() == 2:
        raise ValueError("dual_row_stats takes int64 labels of shape (n,); multi-hot labels need row_stats")
    structure = LabelStructure.of(anchor_labels, candidate_labels, None)
    back = structure.swapped()
    counts, back_counts = structure.counts(), back.counts()
    name = resolve_backend(backend, anchors.device, anchors.dtype)
    options = {"temperature": temperature, "exponents": exponents, "joint": joint, "norm_bound": norm_bound,
               "backend": name, "block_size": block_size, "validate_args": False}
    if name == "reference":
        return (row_stats(anchors, candidates, anchor_labels, candidate_labels, **options),
                row_stats(candidates, anchors, candidate_labels, anchor_labels, **options))
    inv_tau = _inverse_temperature(temperature, anchors)
    if name == "triton":
        split = (1.0,) if joint else exponents
        out = DualTritonRowStats.apply(anchors, candidates, anchor_labels, candidate_labels, inv_tau, split,
                                       block_size)
        return (_joined(RowStats(*out[:3], *counts, split), joint),
                _joined(RowStats(*out[3:], *back_counts, split), joint))
    if joint and dense_fits(block_size, anchors.shape[0], candidates.shape[0]) and anchors.shape[0] >= 2:
        spec = TermSpec(exponents, joint, False)  # no tile, so no bound to read
        lse, col_lse = dense_all_lse(anchors, candidates, inv_tau, None, columns_too=True)
        lse, col_lse = lse[:, None], col_lse[:, None]
    else:
        spec = _term_spec(anchors, candidates, temperature, exponents, joint, norm_bound, validate_args)
        block, keep = plan_tiles(check_block_size(block_size), anchors.shape[0], candidates.shape[0],
                                 2 * len(spec.gammas))
        labels = (None, None) if joint else (anchor_labels, candidate_labels)
        lse, col_lse = ChunkedStats.apply(anchors, candidates, inv_tau, *labels, None, spec, "dual", block,
                                          keep)
    return (_stats(lse, anchors, candidates, None, inv_tau, spec, structure, counts),
            _stats(col_lse, candidates, anchors, None, inv_tau, spec, back, back_counts))
