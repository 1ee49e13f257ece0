"""Throughput of the batched SimCLR augmentation against kornia's AugmentationSequential.

Both run in this process on the same batches: warm-up calls, then ``--repeats`` rounds
in which each library is timed once (alternating, so both see the same machine load);
the median time gives images per second. Writes
``benchmarks/results/augment.json`` and ``augment.md`` with the machine and commit.

    python benchmarks/bench_augment.py [--repeats 7] [--devices cpu cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
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


def time_calls(
    fns: dict[str, Callable[[], torch.Tensor]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds per call of each function; calls alternate between them (fair under varying load)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "contrastive/augment", "benchmarks/bench_augment.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes to contrastive/augment"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        import kornia

        kornia_version = kornia.__version__
    except ImportError:
        kornia_version = None

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "kornia": kornia_version,
        "python": platform.python_version(),
        "commit": commit,
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
    }


def run(devices: list[str], repeats: int, warmup: int) -> list[dict[str, object]]:
    """Time both libraries for every device and shape."""
    rows = []
    for device_name in devices:
        device = torch.device(device_name)
        for shape in SHAPES:
            b, _, size, _ = shape
            x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
            ours = SimCLRAugmentation(size)
            seed = torch.Generator(device=device).manual_seed(0)
            row: dict[str, object] = {
                "device": device_name,
                "shape": "x".join(map(str, shape)),
                "blur": ours.blur,
            }
            ours_hsv = SimCLRAugmentation(size, hue_space="hsv")
            fns: dict[str, Callable[[], torch.Tensor]] = {
                "contrastive": partial(ours, x, generator=seed),
                "contrastive_hsv": partial(ours_hsv, x, generator=seed),
            }
            try:
                theirs = kornia_simclr(size, ours.blur).to(device)
                fns["kornia"] = partial(theirs, x)
            except ImportError:
                pass
            medians = time_calls(fns, device, warmup, repeats)
            for library, seconds in medians.items():
                row[f"{library}_s"] = seconds
                row[f"{library}_img_s"] = b / seconds
            for library in ("contrastive", "contrastive_hsv"):
                kornia_s = medians.get("kornia")
                row[f"{library}_speedup"] = kornia_s / medians[library] if kornia_s else None
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
        f"Python {info['python']}; commit `{info['commit']}`; "
        f"1-minute load average at start {info['load_average_1min_at_start']} (a shared machine).",
        "",
        f"Median of {repeats} calls after warm-up, alternating the two libraries call by call; "
        "float32 input in [0, 1]; SimCLR (s = 1): crop "
        "(0.08-1, 3/4-4/3), flip 0.5, jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale 0.2, blur p 0.5 "
        "(kernel 10 % of side, sigma 0.1-2) at 224 px only (as in the paper). Hue: our default "
        'rotates YIQ chroma; `hue_space="hsv"` shifts HSV hue like kornia.',
        "",
        "| device | batch | blur | contrastive, YIQ hue (img/s) | contrastive, HSV hue (img/s) "
        "| kornia (img/s) | speed-up YIQ | speed-up HSV |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]

    def fmt(value: object, pattern: str) -> str:
        """``value`` formatted, or n/a."""
        return pattern.format(value) if value else "n/a"

    for r in rows:
        lines.append(
            f"| {r['device']} | {r['shape']} | {'yes' if r['blur'] else 'no'} | "
            f"{r['contrastive_img_s']:.0f} | {r['contrastive_hsv_img_s']:.0f} | "
            f"{fmt(r.get('kornia_img_s'), '{:.0f}')} | {fmt(r['contrastive_speedup'], '{:.2f}x')} | "
            f"{fmt(r['contrastive_hsv_speedup'], '{:.2f}x')} |"
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
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine()
    rows = run(args.devices, args.repeats, args.warmup)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if "cpu" in args.devices else "_" + "_".join(args.devices)
    suffix += "" if args.threads is None else f"_threads{args.threads}"
    (args.out / f"augment{suffix}.json").write_text(
        json.dumps({"machine": info, "results": rows}, indent=2) + "\n"
    )
    (args.out / f"augment{suffix}.md").write_text(markdown(rows, info, args.repeats))
    print(markdown(rows, info, args.repeats))


if __name__ == "__main__":
    main()
