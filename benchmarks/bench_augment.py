"""Throughput of the batched SimCLR augmentation against kornia's AugmentationSequential.

Both run in this process one after another on the same batches: warm-up calls, then
``--repeats`` timed calls; the median time gives images per second. Writes
``benchmarks/results/augment.json`` and ``augment.md`` with the machine and commit.

    python benchmarks/bench_augment.py [--repeats 7] [--devices cpu cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from contrastive.augment.blur import simclr_kernel_size
from contrastive.augment.pipelines import SimCLRAugmentation

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = ((256, 3, 32, 32), (64, 3, 224, 224))


def kornia_simclr(size: int, blur: bool) -> torch.nn.Module:
    """kornia's AugmentationSequential with SimCLR's operations and parameters (s = 1)."""
    import kornia.augmentation as K

    ops = [
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8),
        K.RandomGrayscale(p=0.2),
    ]
    if blur:
        k = simclr_kernel_size(size)
        ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=0.5))
    return K.AugmentationSequential(*ops)


def time_call(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict[str, object]:
    """CPU model, cores, threads, GPU, versions and commit."""
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        import kornia

        kornia_version = kornia.__version__
    except ImportError:
        kornia_version = None
    import os

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "kornia": kornia_version,
        "python": platform.python_version(),
        "commit": commit,
    }


def run(devices: list[str], repeats: int, warmup: int) -> list[dict[str, object]]:
    """Time both libraries for every device and shape."""
    rows = []
    for name in devices:
        device = torch.device(name)
        for shape in SHAPES:
            b, _, size, _ = shape
            x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
            ours = SimCLRAugmentation(size)
            seed = torch.Generator(device=device).manual_seed(0)
            row: dict[str, object] = {"device": name, "shape": "x".join(map(str, shape)), "blur": ours.blur}
            row["contrastive_s"] = time_call(partial(ours, x, generator=seed), device, warmup, repeats)
            try:
                theirs = kornia_simclr(size, ours.blur).to(device)
                row["kornia_s"] = time_call(partial(theirs, x), device, warmup, repeats)
            except ImportError:
                row["kornia_s"] = None
            row["contrastive_img_s"] = b / row["contrastive_s"]
            row["kornia_img_s"] = b / row["kornia_s"] if row["kornia_s"] else None
            row["speedup"] = row["kornia_s"] / row["contrastive_s"] if row["kornia_s"] else None
            rows.append(row)
            print(row, flush=True)
    return rows


def markdown(rows: list[dict[str, object]], info: dict[str, object], repeats: int) -> str:
    """The results as a markdown table with the machine."""
    lines = [
        "# SimCLR augmentation throughput: contrastive vs kornia",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, "
        f"GPU {info['gpu'] or 'none'}; torch {info['torch']}, kornia {info['kornia']}, "
        f"Python {info['python']}; commit `{info['commit']}`.",
        "",
        f"Median of {repeats} calls after warm-up; float32 input in [0, 1]; SimCLR (s = 1): crop "
        "(0.08-1, 3/4-4/3), flip 0.5, jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale 0.2, blur p 0.5 "
        "(kernel 10 % of side, sigma 0.1-2) at 224 px only (as in the paper). Hue: ours rotates YIQ "
        "chroma, kornia shifts HSV hue.",
        "",
        "| device | batch | blur | contrastive (img/s) | kornia (img/s) | speed-up |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        kornia = f"{r['kornia_img_s']:.0f}" if r["kornia_img_s"] else "n/a"
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "n/a"
        lines.append(
            f"| {r['device']} | {r['shape']} | {'yes' if r['blur'] else 'no'} | "
            f"{r['contrastive_img_s']:.0f} | {kornia} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse arguments, time, write the JSON and markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    info = machine()
    rows = run(args.devices, args.repeats, args.warmup)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if "cpu" in args.devices else "_" + "_".join(args.devices)
    (args.out / f"augment{suffix}.json").write_text(
        json.dumps({"machine": info, "results": rows}, indent=2) + "\n"
    )
    (args.out / f"augment{suffix}.md").write_text(markdown(rows, info, args.repeats))
    print(markdown(rows, info, args.repeats))


if __name__ == "__main__":
    main()
