"""Time forward+backward and peak memory of NT-Xent implementations, each size and library in its own process.

Implementations (two views of B samples, 2N = 2B embeddings of dimension D, fp32, CPU):

* ``ours``       -- ``contrastive.functional.nt_xent`` on the chunked engine;
* ``torch``      -- the materialised SimCLR loss: 2N x 2N logits, diagonal masked, cross entropy;
* ``pml-ntxent`` -- pytorch-metric-learning ``NTXentLoss`` (pair ids as labels);
* ``pml-supcon`` -- pytorch-metric-learning ``SupConLoss`` (pair ids as labels: the same loss).

Peak memory is the growth of the process's peak resident set over its resident set
after the inputs were built (so the interpreter and torch themselves are not counted).
Run ``python benchmarks/bench_losses.py`` (add ``--sizes 512 4096`` to choose sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SIZES = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144]
IMPLEMENTATIONS = ["ours", "torch", "pml-ntxent", "pml-supcon"]
# Largest 2N each implementation runs at; beyond, its O(N^2) (pml-ntxent: O(N^3)) memory exceeds RAM.
MAX_SIZE = {"ours": 262144, "torch": 16384, "pml-ntxent": 512, "pml-supcon": 16384}
TEMPERATURE = 0.1


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _loss_fn(name: str):
    """Return ``f(z1, z2) -> loss`` for implementation ``name``."""
    import torch
    import torch.nn.functional as F

    if name == "ours":
        from contrastive.functional import nt_xent

        return lambda z1, z2: nt_xent(z1, z2, temperature=TEMPERATURE, backend="chunked")
    if name == "torch":

        def materialised(z1, z2):
            z = F.normalize(torch.cat([z1, z2]), dim=1)
            logits = (z @ z.T / TEMPERATURE).fill_diagonal_(float("-inf"))
            b = z1.shape[0]
            return F.cross_entropy(logits, torch.cat([torch.arange(b, 2 * b), torch.arange(b)]))

        return materialised
    from pytorch_metric_learning import losses

    pml = (
        losses.NTXentLoss(temperature=TEMPERATURE)
        if name == "pml-ntxent"
        else losses.SupConLoss(temperature=TEMPERATURE)
    )

    def metric_learning(z1, z2):
        b = z1.shape[0]
        return pml(torch.cat([z1, z2]), torch.arange(b).repeat(2))

    return metric_learning


def worker(name: str, size: int, dim: int, repeats: int) -> dict:
    """Measure one implementation at one size in this process; return a result row."""
    import torch

    torch.manual_seed(0)
    b = size // 2
    z1 = torch.randn(b, dim, requires_grad=True)
    z2 = torch.randn(b, dim, requires_grad=True)
    fn = _loss_fn(name)
    baseline = _rss_bytes()
    times = []
    loss = None
    for _ in range(repeats):
        z1.grad = z2.grad = None
        start = time.perf_counter()
        loss = fn(z1, z2)
        loss.backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "implementation": name,
        "size": size,
        "dim": dim,
        "seconds": min(times),
        "repeats": repeats,
        "peak_bytes": max(0, peak - baseline),
        "peak_rss_bytes": peak,
        "loss": float(loss.detach()),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }


def machine() -> dict:
    """Machine, software and commit the table was measured on."""
    import torch

    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()
        except OSError:
            return ""

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in run(["lscpu"]).splitlines()
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    memory = next(
        (int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": run(["git", "rev-parse", "HEAD"]),
        "dirty": bool(run(["git", "status", "--porcelain", "--", "contrastive"])),
    }


def markdown(rows: list[dict], info: dict) -> str:
    """Render the result rows as a markdown table with the machine above it."""
    lines = [
        f"# NT-Xent forward+backward, D={rows[0]['dim'] if rows else 128}, fp32, CPU",
        "",
        f"- CPU: {info['cpu']} ({info['cores']} cores, {info['memory_bytes'] / 2**30:.0f} GiB), "
        f"torch {info['torch']} ({info['threads']} threads), Python {info['python']}",
        f"- commit: `{info['commit']}`"
        + (" (with uncommitted changes to contrastive/)" if info["dirty"] else ""),
        "- time: best of the repeats; memory: peak resident growth over the inputs; "
        "each cell measured in its own process",
        "",
        "| 2N | " + " | ".join(IMPLEMENTATIONS) + " | ours / torch (time) | ours / torch (memory) |",
        "|---:|" + "---:|" * (len(IMPLEMENTATIONS) + 2),
    ]
    by_key = {(r["implementation"], r["size"]): r for r in rows}
    for size in sorted({r["size"] for r in rows}):
        cells = []
        for name in IMPLEMENTATIONS:
            r = by_key.get((name, size))
            cells.append(
                "—"
                if r is None
                else (r.get("error") or f"{r['seconds']:.3f} s / {r['peak_bytes'] / 2**20:,.0f} MiB")
            )
        ours, ref = by_key.get(("ours", size)), by_key.get(("torch", size))
        if ours and ref and "error" not in ours and "error" not in ref:
            ratio = [
                f"{ours['seconds'] / ref['seconds']:.2f}x",
                f"{ours['peak_bytes'] / max(ref['peak_bytes'], 1):.3f}x",
            ]
        else:
            ratio = ["—", "—"]
        lines.append(f"| {size:,} | " + " | ".join(cells + ratio) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every (implementation, size) cell in a fresh process and write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    parser.add_argument("--implementations", nargs="*", default=IMPLEMENTATIONS)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--output", default=str(RESULTS / "losses"))
    parser.add_argument("--worker", nargs=2, metavar=("IMPLEMENTATION", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, size = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(name, size, args.dim, repeats=3 if size <= 4096 else 1)))
        return
    info = machine()
    rows = []
    for size in args.sizes:
        for name in args.implementations:
            if size > MAX_SIZE[name]:
                continue
            cmd = [sys.executable, __file__, "--worker", name, str(size), "--dim", str(args.dim)]
            try:
                done = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                row = (
                    json.loads(done.stdout.strip().splitlines()[-1])
                    if done.returncode == 0
                    else {
                        "implementation": name,
                        "size": size,
                        "dim": args.dim,
                        "error": f"failed (exit {done.returncode})",
                    }
                )
            except subprocess.TimeoutExpired:
                row = {"implementation": name, "size": size, "dim": args.dim, "error": "timed out"}
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.output + ".json").write_text(
                json.dumps({"machine": info, "results": rows}, indent=2) + "\n"
            )
            Path(args.output + ".md").write_text(markdown(rows, info))


if __name__ == "__main__":
    main()
