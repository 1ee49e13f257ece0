"""Launching the Triton kernels: tile configuration, dtypes, coefficient tables and grids.

Plain torch around :mod:`contrastive.engine.triton_kernels`; ``triton`` is imported on the
first launch, never at import time. Autograd lives in :mod:`contrastive.engine.triton`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import torch

from contrastive.engine.reference import compute_dtype

Tensor = torch.Tensor
LOG2E = 1.4426950408889634
#: The most exponents one launch handles (``triton_kernels.MAX_EXPONENTS``; triton stays unimported).
MAX_EXPONENTS = 4


def interpreter_enabled() -> bool:
    """Return whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _kernels() -> ModuleType:
    """Return the kernel module, (re)imported so that its kernels follow the current ``TRITON_INTERPRET``.

    ``triton.jit`` decides between compiled and interpreted kernels when it decorates them,
    so the module is imported on first use and reloaded if the setting changed since.
    """
    module = importlib.import_module("contrastive.engine.triton_kernels")
    interpreted = type(module.row_stats_forward_kernel).__name__ == "InterpretedFunction"
    if interpreted != interpreter_enabled():
        module = importlib.reload(module)
    return module


#: Environment variable overriding fields of the automatic :class:`TileConfig` (for tuning sweeps).
TILES_ENV = "CONTRASTIVE_TRITON_TILES"
#: How the backward computes dC = dSᵀ·A: a separate column-parallel pass, or atomics in the row pass.
COLUMN_MODES = ("pass", "atomic")


@dataclass(frozen=True)
class TileConfig:
    """Tile edges and launch options: anchors x candidates per tile, feature chunk, output feature block."""

    block_m: int
    block_n: int
    block_d: int
    block_dv: int
    num_warps: int
    num_stages: int
    columns: str = "pass"
    backward_warps: int = 8

    def __post_init__(self) -> None:
        """Raise ValueError for edges that are not powers of two of at least 16, or an unknown mode."""
        for name in ("block_m", "block_n", "block_d", "block_dv"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16 or value & (value - 1):
                raise ValueError(f"TileConfig.{name} must be a power of two >= 16, got {value!r}")
        warps = (self.num_warps, self.backward_warps)
        if any(w not in (1, 2, 4, 8, 16) for w in warps) or not 1 <= self.num_stages <= 8:
            raise ValueError(f"TileConfig: num_warps and backward_warps in 1..16 (powers of two), num_stages "
                             f"in 1..8, got {warps} and {self.num_stages}")
        if self.columns not in COLUMN_MODES:
            raise ValueError(f"TileConfig.columns must be one of {COLUMN_MODES}, got {self.columns!r}")

    def launch_options(self, backward: bool = False) -> dict[str, object]:
        """Return the launch keywords of the forward (or ``backward``) kernels: warps, stages, contraction.

        Contraction is passed explicitly so that Triton 3.9 does not warn about its changing default.
        """
        warps = self.backward_warps if backward else self.num_warps
        return {"num_warps": warps, "num_stages": self.num_stages, "enable_fp_fusion": True}


def _pow2_between(value: int, low: int, high: int) -> int:
    """Return the power of two nearest above ``value``, clamped to ``[low, high]``."""
    return max(low, min(high, 1 << max(0, math.ceil(math.log2(max(1, value))))))


def tile_overrides(text: str | None = None) -> dict[str, object]:
    """Parse ``"block_m=128,num_warps=8,columns=atomic"`` (default: :data:`TILES_ENV`) into fields."""
    text = os.environ.get(TILES_ENV, "") if text is None else text
    fields = set(TileConfig.__dataclass_fields__)
    out: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or name not in fields:
            raise ValueError(f"{TILES_ENV}: expected comma-separated name=value with names in "
                             f"{sorted(fields)}, got {item!r}")
        if name == "columns":
            out[name] = value
        elif value.isdigit():
            out[name] = int(value)
        else:
            raise ValueError(f"{TILES_ENV}: {name} takes a positive integer, got {value!r}")
    return out


def tile_config(dtype: torch.dtype, dim: int, device: torch.device, block: int | None = None) -> TileConfig:
    """Return the tile configuration for inputs of ``dtype`` and ``dim`` features on ``device``.

    ``block`` (the engine's ``block_size``) sets the anchor and candidate tile edges, rounded
    up to a power of two in [16, 128]; None picks 64. Features are read in chunks of 64 (32 for
    4-byte and wider inputs); a backward program writes 128 features (64 for 4-byte and wider).
    Warps follow the sm_90 resource tables (``benchmarks/results/triton_static*.md``): the
    backward runs 8 (with 4 every bf16 backward kernel spilled registers at these tiles, with
    8 none did), the forward 4 for 2-byte inputs at 64-wide tiles (spill-free) and 8 for
    4-byte inputs (which spilled with 4) or 128-wide tiles.
    Fields named in the environment variable :data:`TILES_ENV` replace the automatic ones.
    """
    wide = dtype.itemsize >= 4
    edge = _pow2_between(block, 16, 128) if block is not None else 64
    block_d = _pow2_between(dim, 16, 32 if wide else 64)
    block_dv = _pow2_between(dim, 16, 64 if wide else 128)
    auto = TileConfig(edge, edge, block_d, block_dv, num_warps=4 if edge <= 64 and not wide else 8,
                      num_stages=2, backward_warps=8)
    overrides = tile_overrides()
    return dataclasses.replace(auto, **overrides) if overrides else auto


def _precision(dtype: torch.dtype) -> str:
    """Return ``tl.dot``'s input precision: exact fp32 unless torch allows TF32 for fp32 matmuls."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def _groups(exponents: Sequence[float]) -> list[tuple[int, tuple[float, ...]]]:
    """Split the exponents into ``(first column, exponents)`` groups of at most four, one launch each."""
    return [(e0, tuple(exponents[e0:e0 + MAX_EXPONENTS])) for e0 in range(0, len(exponents), MAX_EXPONENTS)]


def _padded(group: tuple[float, ...]) -> tuple[float, float, float, float]:
    """The group's exponents as the kernels' four scalar arguments (unused ones are 0)."""
    return tuple(float(g) for g in group) + (0.0,) * (MAX_EXPONENTS - len(group))  # type: ignore[return-value]


def _dtypes(dtype: torch.dtype) -> dict[str, object]:
    """Return the kernels' ``ACC`` (accumulation), ``DOT`` (dot operand) and ``PRECISION`` for ``dtype``.

    The dot operands are the inputs' dtype (and dS is rounded to it, as in flash attention),
    except bf16 under the interpreter, which cannot multiply bf16: there they are fp32.
    """
    import triton.language as tl

    names = {torch.float32: tl.float32, torch.float64: tl.float64, torch.float16: tl.float16,
             torch.bfloat16: tl.bfloat16}
    dot = tl.float32 if dtype == torch.bfloat16 and interpreter_enabled() else names[dtype]
    acc = tl.float64 if compute_dtype(dtype) == torch.float64 else tl.float32
    return {"ACC": acc, "DOT": dot, "PRECISION": _precision(dtype)}


def triton_cdiv(x: int, y: int) -> int:
    """Return ⌈x / y⌉ for positive ints."""
    return -(-x // y)


def label_words(labels: Tensor) -> int:
    """Return the kernels' ``WORDS``: 0 for integer labels ``(n,)``, else the bitset words per row ``(n, W)``."""
    return 0 if labels.dim() == 1 else labels.shape[1]


def forward_stats(a: Tensor, c: Tensor, a_labels: Tensor, c_labels: Tensor, a_self: Tensor, inv_tau: Tensor,
                  exponents: Sequence[float], config: TileConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the forward kernel(s) and return ``(neg_lse, pos_lse, pos_sum)`` in the accumulation dtype."""
    kernels = _kernels()
    m, n, d = a.shape[0], c.shape[0], a.shape[1]
    dtype = compute_dtype(a.dtype)
    neg_lse = torch.full((m, len(exponents)), float("-inf"), dtype=dtype, device=a.device)
    pos_lse = torch.full((m,), float("-inf"), dtype=dtype, device=a.device)
    pos_sum = torch.zeros(m, dtype=dtype, device=a.device)
    if m == 0 or n == 0:
        return neg_lse, pos_lse, pos_sum
    grid = (triton_cdiv(m, config.block_m),)
    for e0, group in _groups(exponents):
        whole = len(group) == len(exponents)
        out = neg_lse if whole else torch.empty((m, len(group)), dtype=dtype, device=a.device)
        kernels.row_stats_forward_kernel[grid](
            a, c, a_labels, c_labels, a_self, inv_tau, out, pos_lse, pos_sum, *_padded(group),
            m, n, d, a.stride(0), c.stride(0), out.stride(0),
            NUM_EXP=len(group), BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_D=config.block_d,
            WORDS=label_words(a_labels), **_dtypes(a.dtype), **config.launch_options())
        if out is not neg_lse:
            neg_lse[:, e0:e0 + len(group)] = out
    return neg_lse, pos_lse, pos_sum


def coefficient_table(grads: Sequence[Tensor | None], neg_lse: Tensor, pos_lse: Tensor,
                      group: tuple[float, ...], e0: int, with_positives: bool) -> Tensor:
    r"""Return the ``(M, 2E + 3)`` per-anchor backward coefficients of one exponent group.

    Columns ``[γ_e ∂L/∂neg_lse_e, neg_lse_e·log2 e]`` per exponent, then ``∂L/∂pos_lse``,
    ``pos_lse·log2 e`` and ``∂L/∂pos_sum`` (zeros unless ``with_positives``). Empty sets
    (lse = -inf) get a shift of 0; their masks are empty, so it is never used.
    """
    def grad_or_zero(g: Tensor | None, like: Tensor) -> Tensor:
        return torch.zeros_like(like) if g is None else g.to(like.dtype)

    def shift(lse: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=lse.dtype, device=lse.device)
        return torch.where(torch.isfinite(lse), lse, zero) * LOG2E

    g_neg = grad_or_zero(grads[0], neg_lse)
    columns = []
    for offset, gamma in enumerate(group):
        e = e0 + offset
        columns += [g_neg[:, e] * gamma, shift(neg_lse[:, e])]
    if with_positives:
        columns += [grad_or_zero(grads[1], pos_lse), shift(pos_lse), grad_or_zero(grads[2], pos_lse)]
    else:
        columns += [torch.zeros_like(pos_lse)] * 3
    return torch.stack(columns, dim=1).contiguous()


def backward_products(a: Tensor, c: Tensor, a_labels: Tensor, c_labels: Tensor, a_self: Tensor,
                      inv_tau: Tensor, exponents: Sequence[float], grads: Sequence[Tensor | None],
                      neg_lse: Tensor, pos_lse: Tensor, config: TileConfig, rows: bool, columns: bool,
                      symmetric: bool = False,
                      dual: tuple[Sequence[Tensor | None], Tensor, Tensor] | None = None,
                      ) -> tuple[Tensor | None, Tensor | None]:
    """Return ``(dS·C, dSᵀ·A)`` in the accumulation dtype, each if asked (``(dS + dSᵀ)·Z`` if symmetric).

    ``dual = (column grads, column neg_lse, column pos_lse)``: the candidates' own statistics
    against the anchors (the transposed problem, no self anywhere, as CLIP's two directions)
    were computed too, and dS holds both directions' terms, so one row pass and one column
    pass give both gradients.

    ``dSᵀ·A`` comes from the column-parallel kernel (deterministic), or, with
    ``config.columns == "atomic"`` and both products asked, from atomic adds in the row
    kernel's pass (one recompute of the tiles instead of two; the summation order varies
    between runs). Asked alone, ``dSᵀ·A`` always takes the column pass: the atomic path
    would recompute every tile in the row kernel anyway, and add contention on top.
    """
    kernels = _kernels()
    m, n, d = a.shape[0], c.shape[0], a.shape[1]
    dtype = compute_dtype(a.dtype)
    dA = torch.zeros((m, d), dtype=dtype, device=a.device) if rows else None
    dC = torch.zeros((n, d), dtype=dtype, device=a.device) if columns else None
    if m == 0 or n == 0 or d == 0:
        return dA, dC
    common = {"BLOCK_M": config.block_m, "BLOCK_N": config.block_n, "BLOCK_D": config.block_d,
              "BLOCK_DV": config.block_dv, "WORDS": label_words(a_labels), **_dtypes(a.dtype),
              **config.launch_options(backward=True)}
    features = triton_cdiv(d, config.block_dv)
    # atomics add every exponent group straight into the zeroed dC (no temporary per group)
    atomic = config.columns == "atomic" and dA is not None and dC is not None and not symmetric
    for e0, group in _groups(exponents):
        table = coefficient_table(grads, neg_lse, pos_lse, group, e0, with_positives=e0 == 0)
        col_table = table if dual is None else coefficient_table(*dual, group, e0, with_positives=e0 == 0)
        scalars = (*_padded(group), m, n, d, a.stride(0), c.stride(0), table.stride(0))
        if dA is not None:
            out = dA if e0 == 0 else torch.empty_like(dA)
            dc = dC if atomic else out  # unused unless atomic: any pointer of the right dtype
            kernels.row_stats_backward_rows_kernel[(triton_cdiv(m, config.block_m), features)](
                a, c, a_labels, c_labels, a_self, inv_tau, table, col_table, out, dc, *scalars,
                out.stride(0), dc.stride(0),
                NUM_EXP=len(group), COLUMN_COEFS=symmetric or dual is not None, ATOMIC_COLUMNS=atomic,
                **common)
            if out is not dA:
                dA += out
        if dC is not None and not atomic:
            out = dC if e0 == 0 else torch.empty_like(dC)
            kernels.row_stats_backward_columns_kernel[(triton_cdiv(n, config.block_n), features)](
                a, c, a_labels, c_labels, a_self, inv_tau, table, col_table, out, *scalars, out.stride(0),
                NUM_EXP=len(group), COLUMN_COEFS=dual is not None, **common)
            if out is not dC:
                dC += out
    return dA, dC
