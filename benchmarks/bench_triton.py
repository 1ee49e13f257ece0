"""Contrastive losses forward+backward on a GPU: the fused Triton engine against materialised implementations.

``--losses clip`` (the default): for 2N embeddings (N image + N text features, unit norm,
D features) each method computes CLIP's symmetric cross entropy at logit scale 1/0.07 and
its gradient with respect to both feature matrices, in this process, one after another:

* ``contrastive-triton`` — ``contrastive.functional.clip(..., backend="triton")``,
* ``torch-materialised`` — ``logits = s·x·yᵀ``, ``(CE(logits) + CE(logitsᵀ)) / 2``,
* ``open_clip`` — ``open_clip.loss.ClipLoss`` (where installed),
* ``inf_cl`` — Inf-CL's ``cal_inf_loss`` (where installed; ``head_dim`` 256 or 128 dividing D).

``--losses nt_xent supcon``: the engine's NT-Xent on two views of N samples and SupCon on
the same 2N embeddings with N/4 classes (so every anchor has 7 positives), against a
materialised torch NT-Xent; the issue's goal is supcon within 10 % of nt_xent.

Reported per (loss, 2N, D, dtype): median seconds of ``repeats`` calls after a warm-up, peak
memory above the inputs, model TFLOP/s ``6·N_q·N_k·D / time`` (clip: N_q = N_k = N; nt_xent
and supcon: N_q = N_k = 2N) and that as a percentage of the device's dense peak for the
dtype (fp32: non-tensor-core FMA peak, since the kernels use IEEE fp32 dots unless TF32 is
allowed). A method that runs out of memory is recorded as ``OOM`` and skipped at larger
sizes, one slower than ``--max-seconds`` likewise. ``--tiles A B ...`` runs the engine once
per tile setting (``CONTRASTIVE_TRITON_TILES`` syntax, e.g. ``block_dv=256,num_warps=8``;
``default`` for the automatic one). Writes ``triton.json`` and ``triton.md`` with the device
and commit to ``--out`` (default ``benchmarks/results``).

    python benchmarks/bench_triton.py [--losses clip nt_xent supcon] [--sizes 8192 32768 ...]
        [--dims 128 256 768] [--dtypes fp32 bf16] [--tiles default columns=atomic]

Needs CUDA; ``--smoke`` instead runs a tiny size on the CPU through Triton's interpreter
(to check the script, not to measure) and writes to ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TILES_ENV = "CONTRASTIVE_TRITON_TILES"  # contrastive.engine.triton_launch.TILES_ENV
SIZES = (8192, 32768, 65536, 262144, 1048576, 4194304)
DIMS = (128, 256, 768)
DTYPES = ("fp32", "bf16")
LOGIT_SCALE = 1.0 / 0.07
LOSSES = ("clip", "nt_xent", "supcon")
#: SupCon's classes: 2N embeddings in N / CLASS_SIZE classes, so each anchor has 2·CLASS_SIZE - 1 positives.
CLASS_SIZE = 4
#: Dense peak TFLOP/s per dtype (vendor datasheets, without sparsity); fp32 is the non-tensor-core peak.
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "bf16": 989.4, "fp16": 989.4},
    "H100 80GB HBM3": {"fp32": 67.0, "bf16": 989.4, "fp16": 989.4},  # SXM
    "H100 PCIe": {"fp32": 51.2, "bf16": 756.0, "fp16": 756.0},
    "H100 NVL": {"fp32": 60.0, "bf16": 835.0, "fp16": 835.0},
    "A100": {"fp32": 19.5, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "bf16": 362.0, "fp16": 362.0},
    "L4": {"fp32": 30.3, "bf16": 121.0, "fp16": 121.0},
    "A10": {"fp32": 31.2, "bf16": 125.0, "fp16": 125.0},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="2N: image + text embeddings"
    )
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--losses", nargs="+", default=["clip"], choices=list(LOSSES))
    parser.add_argument("--methods", nargs="+", default=None, help="subset of the methods to run")
    parser.add_argument(
        "--tiles",
        nargs="+",
        default=["default"],
        help="tile settings for the engine (CONTRASTIVE_TRITON_TILES)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="skip larger sizes once a call takes longer"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU run under TRITON_INTERPRET=1 (no numbers)"
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    return parser.parse_args(argv)


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """Return the dense peak TFLOP/s of ``device_name`` for ``dtype``, or None for an unknown device."""
    for key, peaks in PEAK_TFLOPS.items():
        if key in device_name:
            return peaks[dtype]
    return None


def methods(loss: str) -> dict[str, Callable]:
    """Return the available methods for ``loss``: name -> f(x, y, scale) (a scalar tensor).

    ``x`` and ``y`` are the N x D image and text features (clip) or the two views (nt_xent, supcon).
    """
    import torch
    import torch.nn.functional as F

    from contrastive.functional import clip, nt_xent, supcon

    if loss == "nt_xent":

        def materialised_nt_xent(x, y, scale):
            z = torch.cat([x, y]).float()
            logits = (scale * z @ z.T).fill_diagonal_(float("-inf"))
            n = x.shape[0]
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(x.device)
            return F.cross_entropy(logits, target)

        return {
            "contrastive-triton": lambda x, y, scale: nt_xent(
                x, y, temperature=1.0 / scale, normalize=False, backend="triton"
            ),
            "torch-materialised": materialised_nt_xent,
        }
    if loss == "supcon":

        def ours_supcon(x, y, scale):
            labels = torch.arange(x.shape[0], device=x.device) // CLASS_SIZE
            return supcon(x, y, labels=labels, temperature=1.0 / scale, normalize=False, backend="triton")

        return {"contrastive-triton": ours_supcon}

    def ours(image, text, scale):
        return clip(image, text, logit_scale=math.log(scale), normalize=False, backend="triton")

    def materialised(image, text, scale):
        logits = scale * image @ text.T
        target = torch.arange(image.shape[0], device=image.device)
        return (F.cross_entropy(logits.float(), target) + F.cross_entropy(logits.T.float(), target)) / 2

    out = {"contrastive-triton": ours, "torch-materialised": materialised}
    try:
        from open_clip.loss import ClipLoss

        open_clip_loss = ClipLoss()
        out["open_clip"] = lambda image, text, scale: open_clip_loss(image, text, scale)
    except ImportError:
        pass
    try:
        from inf_cl import cal_inf_loss

        def inf_cl(image, text, scale):
            dim = image.shape[1]
            head_dim = 256 if dim % 256 == 0 else 128 if dim % 128 == 0 else 64
            return (
                cal_inf_loss(image, text, scale=scale, head_dim=head_dim)
                + cal_inf_loss(text, image, scale=scale, head_dim=head_dim)
            ) / 2

        out["inf_cl"] = inf_cl
    except ImportError:
        pass
    return out


def measure(loss: Callable, n: int, dim: int, dtype, device, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds and peak bytes (above the inputs) of forward+backward of ``loss`` at N per side."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(n, dim, device=device, generator=g), dim=1).to(dtype)
    text = torch.nn.functional.normalize(torch.randn(n, dim, device=device, generator=g), dim=1).to(dtype)
    image.requires_grad_()
    text.requires_grad_()
    scale = torch.tensor(LOGIT_SCALE, device=device)

    def step() -> None:
        image.grad = text.grad = None
        loss(image, text, scale).backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else float("nan")
    return {"seconds": statistics.median(times), "peak_bytes": peak}


def environment(device) -> dict[str, object]:
    """Device, versions and commit."""
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", ""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": commit.strip(),
        "dirty": bool(dirty.strip()),
        "interpreted": os.environ.get("TRITON_INTERPRET") == "1",
        "command": "python benchmarks/bench_triton.py " + " ".join(sys.argv[1:]),
    }


def model_flops(loss: str, n: int, dim: int) -> float:
    """``6·N_q·N_k·D``: forward 2, backward 4 multiply-adds per similarity entry and feature."""
    side = n if loss == "clip" else 2 * n
    return 6.0 * side * side * dim


@contextlib.contextmanager
def tile_setting(tiles: str) -> Iterator[None]:
    """Within the block the engine uses ``tiles`` (``default``: the automatic configuration)."""
    saved = os.environ.get(TILES_ENV)
    os.environ[TILES_ENV] = "" if tiles == "default" else tiles
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(TILES_ENV, None)
        else:
            os.environ[TILES_ENV] = saved


def variants(loss: str, args: argparse.Namespace) -> list[tuple[str, str, Callable]]:
    """``(method, tiles, function)`` to measure for ``loss``: the engine once per tile setting."""
    chosen = {k: v for k, v in methods(loss).items() if args.methods is None or k in args.methods}
    out = []
    for name, function in chosen.items():
        for tiles in args.tiles if name == "contrastive-triton" else ["-"]:
            out.append((name, tiles, function))
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    """Measure every method at every size, dimension and dtype; return the records and the environment."""
    import torch

    device = torch.device("cpu" if args.smoke else "cuda")
    env = environment(device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    records = []
    for loss, dtype_name, dim in itertools.product(args.losses, args.dtypes, args.dims):
        given_up: set[tuple[str, str]] = set()
        for size in sorted(args.sizes):
            n = size // 2
            for name, tiles, function in variants(loss, args):
                record = {
                    "loss": loss,
                    "method": name,
                    "tiles": tiles,
                    "2N": size,
                    "D": dim,
                    "dtype": dtype_name,
                }
                if (name, tiles) in given_up:
                    records.append({**record, "status": "skipped (smaller size failed or was too slow)"})
                    continue
                try:
                    with tile_setting(tiles if tiles != "-" else "default"):
                        result = measure(
                            function, n, dim, dtypes[dtype_name], device, args.warmup, args.repeats
                        )
                except torch.cuda.OutOfMemoryError:
                    given_up.add((name, tiles))
                    records.append({**record, "status": "OOM"})
                    torch.cuda.empty_cache()
                    continue
                except Exception as error:  # a comparison library failing must not stop the others
                    given_up.add((name, tiles))
                    records.append({**record, "status": f"error: {type(error).__name__}: {error}"[:200]})
                    continue
                tflops = model_flops(loss, n, dim) / result["seconds"] / 1e12
                peak = peak_tflops(env["device"], dtype_name)
                records.append(
                    {
                        **record,
                        "status": "ok",
                        **result,
                        "tflops": tflops,
                        "percent_of_peak": None if peak is None else 100.0 * tflops / peak,
                    }
                )
                if result["seconds"] > args.max_seconds:
                    given_up.add((name, tiles))
                print(
                    f"{loss} {dtype_name} D={dim} 2N={size} {name} [{tiles}]: "
                    f"{result['seconds'] * 1e3:.2f} ms, {tflops:.1f} TFLOP/s",
                    flush=True,
                )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"environment": env, "records": records}


def markdown(report: dict[str, object]) -> str:
    """Render the records as a markdown table with the environment."""
    env = report["environment"]
    lines = [
        "# Contrastive losses forward+backward: fused Triton engine vs materialised implementations",
        "",
        f"Device: {env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, "
        f"Python {env['python']}; commit {env['commit']}{' (dirty tree)' if env['dirty'] else ''}"
        f"{'; INTERPRETED (smoke run, not a measurement)' if env['interpreted'] else ''}.",
        f"Command: `{env.get('command', 'python benchmarks/bench_triton.py')}`.",
        "",
        "| loss | dtype | D | 2N | method | tiles | ms | peak MiB | TFLOP/s | % of peak |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in report["records"]:
        head = f"| {r['loss']} | {r['dtype']} | {r['D']} | {r['2N']} | {r['method']} | {r['tiles']} |"
        if r["status"] != "ok":
            lines.append(f"{head} {r['status']} | | | |")
            continue
        pct = "" if r["percent_of_peak"] is None else f"{r['percent_of_peak']:.1f}"
        lines.append(
            f"{head} {r['seconds'] * 1e3:.2f} | {r['peak_bytes'] / 2**20:.1f} | {r['tflops']:.2f} | {pct} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``triton.json`` and ``triton.md``."""
    args = parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the engine first imports the kernels
        args.sizes, args.dims, args.repeats, args.warmup = [min(args.sizes)], [min(args.dims)], 1, 0
        args.methods = args.methods or ["contrastive-triton", "torch-materialised"]
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "bench_triton.py needs a CUDA device (the Triton kernels are compiled for the GPU); none is "
            "available here. Use --smoke to check the script on the CPU under TRITON_INTERPRET=1.",
            file=sys.stderr,
        )
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench_triton_")) if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    report = run(args)
    (out / "triton.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "triton.md").write_text(markdown(report))
    print(f"wrote {out / 'triton.json'} and {out / 'triton.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
