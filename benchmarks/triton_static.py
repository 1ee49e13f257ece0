"""Static resource table of the Triton kernels for a GPU target, compiled on the CPU (no GPU needed).

For each candidate tile configuration the engine's real launches (a general and a symmetric
forward and backward, recorded by ``tools/triton_aot.py``) are compiled to
cubins for ``--capability`` (default 90, the H100) and read back: registers per thread, bytes
spilled to the stack, shared memory, and whether the dots use tensor cores (``wgmma`` on
Hopper). ``-atomic`` marks the row pass that also adds dC with atomics (``columns=atomic``),
``-dual`` the passes that form dS from both directions' coefficients (the symmetric losses'
single backward pass, and CLIP's shared backward).
Spilling kernels are slow whatever the GPU's clock; this table narrows the tile choices
that a GPU timing sweep (``bench_triton.py --tiles``) then decides between.

    python benchmarks/triton_static.py [--dtypes bf16 fp32] [--exponents 1 2] [--capability 90]

Writes ``benchmarks/results/triton_static.{json,md}`` with the commit and the triton version.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/ (not installed)
from tools import triton_aot  # noqa: E402
from contrastive.engine.triton_launch import COLUMN_MODES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EDGES = ((64, 64), (128, 64), (64, 128), (128, 128))
FEATURE_BLOCKS = (64, 128, 256)
WARPS = (4, 8)
SHORT = {
    "row_stats_forward_kernel": "forward",
    "row_stats_backward_rows_kernel": "rows",
    "row_stats_backward_columns_kernel": "columns",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument(
        "--exponents",
        type=int,
        nargs="+",
        default=[1, 2],
        help="numbers of exponents per launch (1: uniform, 2: hard negatives)",
    )
    parser.add_argument(
        "--dim", type=int, default=256, help="features (>= 256 lets every feature block apply)"
    )
    parser.add_argument("--capability", type=int, default=90)
    parser.add_argument(
        "--edges",
        nargs="+",
        default=[f"{m}x{n}" for m, n in EDGES],
        help="anchor x candidate tile edges, e.g. 64x64 128x64",
    )
    parser.add_argument("--feature-blocks", type=int, nargs="+", default=list(FEATURE_BLOCKS))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="triton_static", help="file name (without suffix) of the results")
    return parser.parse_args(argv)


def tiles(block_m: int, block_n: int, block_dv: int, warps: int, columns: str) -> str:
    """The override string for one candidate configuration."""
    return (
        f"block_m={block_m},block_n={block_n},block_dv={block_dv},num_warps={warps},"
        f"backward_warps={warps},columns={columns}"
    )


def kernel_name(launch: triton_aot.Launch) -> str:
    """Short kernel name, with ``-dual`` (both directions' coefficients) and ``-atomic`` marks."""
    name = SHORT[launch.kernel]
    if launch.kwargs.get("COLUMN_COEFS"):
        name += "-dual"
    return name + "-atomic" if launch.kwargs.get("ATOMIC_COLUMNS") else name


def collect(args: argparse.Namespace) -> list[dict[str, object]]:
    """Compile every distinct launch of every candidate configuration; return one row per launch."""
    launches: list[triton_aot.Launch] = []
    for dtype, count in itertools.product(args.dtypes, args.exponents):
        exponents = tuple(1.0 + 0.5 * e for e in range(count))
        edges = [tuple(int(x) for x in edge.split("x")) for edge in args.edges]
        for (m, n), dv, warps, columns in itertools.product(edges, args.feature_blocks, WARPS, COLUMN_MODES):
            setting = tiles(m, n, dv, warps, columns)
            launches += triton_aot.engine_launches(DTYPES[dtype], args.dim, exponents, setting)
    launches = triton_aot.unique(launches)
    start = time.perf_counter()
    usages = triton_aot.compile_usage([(launch, args.capability) for launch in launches], args.workers)
    print(f"compiled {len(launches)} kernels in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    rows = []
    for launch, usage in zip(launches, usages, strict=True):
        k = launch.kwargs
        rows.append(
            {
                "kernel": kernel_name(launch),
                "dtype": str(launch.args[0].dtype).removeprefix("torch."),
                "exponents": k["NUM_EXP"],
                "block_m": k["BLOCK_M"],
                "block_n": k["BLOCK_N"],
                "block_d": k["BLOCK_D"],
                "block_dv": k.get("BLOCK_DV", "-"),
                "warps": k["num_warps"],
                "stages": k["num_stages"],
                "registers": usage.registers,
                "spill_bytes": usage.stack_bytes,
                "shared_kib": round(usage.shared_bytes / 1024, 1),
                "dots": usage.tensor_cores,
            }
        )
    rows.sort(
        key=lambda r: (
            r["kernel"],
            r["dtype"],
            r["exponents"],
            r["spill_bytes"],
            -int(r["block_m"]) * int(r["block_n"]),
            str(r["block_dv"]),
        )
    )
    return rows


def commit() -> str:
    """The checked-out commit (with ``+dirty`` when the tree has changes)."""

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], capture_output=True, text=True, cwd=RESULTS.parent
        ).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "--", "contrastive") else ""
    )


def markdown(rows: list[dict[str, object]], meta: dict[str, object]) -> str:
    """The result table as markdown, with what produced it."""
    head = [
        "kernel",
        "dtype",
        "exponents",
        "block_m",
        "block_n",
        "block_d",
        "block_dv",
        "warps",
        "stages",
        "registers",
        "spill_bytes",
        "shared_kib",
        "dots",
    ]
    lines = [
        "# Triton kernels: registers, spills and shared memory (compiled ahead of time, no GPU)",
        "",
        f"Target sm_{meta['capability']}, D = {meta['dim']}, triton {meta['triton']}, "
        f"commit {meta['commit']}, compiled on {meta['machine']}. Command: `{meta['command']}`.",
        "",
        "A kernel that spills (registers at the 255 cap, `spill_bytes` > 0) keeps part of its state in",
        "local memory; `dots` says whether `tl.dot` became Hopper tensor-core instructions (`wgmma`).",
        "Static counts only: which spill-free configuration is fastest is for a GPU timing run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Compile, tabulate, write JSON and markdown."""
    args = parse_args(argv)
    import triton

    rows = collect(args)
    meta = {
        "capability": args.capability,
        "dim": args.dim,
        "triton": triton.__version__,
        "commit": commit(),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "command": "python benchmarks/triton_static.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
