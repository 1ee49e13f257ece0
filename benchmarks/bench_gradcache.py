"""Peak memory and time per step of a small CNN with and without gradient caching, against batch size.

One step: two views of B images (3x32x32, stored as uint8 the way a data loader keeps
them), a four-layer CNN (stride-2 convolutions 3-16-32-64, average pool, linear to D=128),
NT-Xent at temperature 0.1 on the chunked engine, parameter gradients left in ``.grad``.

* ``plain``   -- both views through the encoder at once with a graph, ``loss.backward()``;
* ``cached``  -- ``contrastive.GradCache(encoder, loss, chunk_size).backward(x1, x2)``.

Every (mode, B) cell runs in a fresh process (``--worker``). Memory is the process's
peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``, which counts every allocation
torch's CPU allocator takes from the system), reported as the whole process (what a
memory limit sees, checked against ``--budget-gib``) and as the growth over the resident
set after the inputs and the model were built. Time is the best of the repeats after a
warm-up step on 256 samples. A ``cached`` cell also times one no-graph forward of both
views, chunk by chunk, so the caching overhead can be read in units of encoder forwards.
Sizes run from small to large; once a mode's whole-process peak exceeds the budget its
larger sizes are not run (they would only need more). ``--smoke`` runs two tiny sizes in
this process in seconds (memory then not comparable), for the test suite.

Run ``nice -n 19 python benchmarks/bench_gradcache.py`` (OMP_WAIT_POLICY=PASSIVE and two
threads are set here); ``--plot`` redraws ``results/gradcache.png`` from the JSON.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from bench_losses import machine  # noqa: E402  (the project's machine/commit record)

SIZES = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
MODES = ("plain", "cached")
THREADS = 2
DIM = 128
TEMPERATURE = 0.1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def small_cnn(dim: int = DIM):  # noqa: ANN201 - a torch module; torch is imported lazily
    """The encoder: uint8 images (c, 3, 32, 32) to embeddings (c, dim), no BatchNorm."""
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(64, dim),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x.float().div(255.0))

    return SmallCNN()


def worker(mode: str, size: int, chunk_size: int, dim: int, repeats: int, threads: int = THREADS) -> dict:
    """Measure one (mode, B) cell in this process; return its result row."""
    import torch

    import contrastive as cl

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder = small_cnn(dim)
    loss = cl.get_loss("nt_xent", temperature=TEMPERATURE, backend="chunked")
    gen = torch.Generator().manual_seed(1)
    views = [torch.randint(0, 256, (size, 3, 32, 32), generator=gen, dtype=torch.uint8) for _ in range(2)]
    cache = cl.GradCache(encoder, loss, chunk_size)

    def step(xs: list[torch.Tensor]) -> torch.Tensor:
        encoder.zero_grad(set_to_none=True)
        if mode == "cached":
            return cache.backward(*xs)
        value = loss(*(encoder(x) for x in xs))
        value.backward()
        return value.detach()

    step([v[:256] for v in views])  # warm-up: first-call costs, not counted
    baseline = _rss_bytes()
    times, cpu_times, value = [], [], None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        value = step(views)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    forward = forward_cpu = None
    if mode == "cached":
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for v in views:
                [encoder(c) for c in v.split(chunk_size)]
        forward, forward_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "mode": mode,
        "size": size,
        "chunk_size": chunk_size if mode == "cached" else None,
        "dim": dim,
        "seconds": min(times),
        "cpu_seconds": min(cpu_times),
        "repeats": repeats,
        "forward_seconds": forward,
        "forward_cpu_seconds": forward_cpu,
        "peak_rss_bytes": peak,
        "peak_bytes": max(0, peak - baseline),
        "loss": float(value),
        "grad_norm": float(torch.cat([p.grad.flatten() for p in encoder.parameters()]).norm()),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }


def machine_info() -> dict:
    """``bench_losses.machine()``, silencing the ResourceWarning of the file it leaves to the collector."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        info = machine()
        gc.collect()
    return info


def largest_within(rows: list[dict], mode: str, budget: int) -> int | None:
    """The largest B whose cell of ``mode`` ran and peaked within ``budget`` bytes (whole process)."""
    ran = [r for r in rows if r["mode"] == mode and "error" not in r]
    fits = [r["size"] for r in ran if r["peak_rss_bytes"] <= budget]
    return max(fits, default=None)


def _cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if "error" in r:
        return r["error"]
    memory = f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB ({r['peak_bytes'] / 2**20:,.0f})"
    return f"{r['seconds']:.2f} s ({r['cpu_seconds']:.2f} s CPU) / {memory}"


def markdown(report: dict) -> str:
    """Render the rows side by side, with the machine, the budget verdict and the overheads."""
    rows, info, budget = report["results"], report["machine"], report["budget_bytes"]
    chunk = report["chunk_size"]
    loads = [r["load_average"] for r in rows if "load_average" in r]
    threads = [r["threads"] for r in rows if "threads" in r]
    lines = [
        f"# Gradient caching: small CNN on 3x32x32, two views, NT-Xent (D={report['dim']}), fp32, CPU",
        "",
        f"- CPU: {info['cpu']} ({info['cores']} cores, {info['memory_bytes'] / 2**30:.0f} GiB), "
        f"torch {info['torch']} ({max(threads, default=THREADS)} threads, OMP_WAIT_POLICY=PASSIVE, nice 19), "
        f"Python {info['python']}",
        f"- commit: `{info['commit']}`"
        + (" (with uncommitted changes to contrastive/)" if info["dirty"] else ""),
        f"- load average (1 min) during the cells: {min(loads, default=0):.1f} to {max(loads, default=0):.1f}"
        + (" — smoke run, one process, memory not comparable" if report.get("smoke") else ""),
        "- cell: wall time of one step (CPU time of the process, which a loaded machine disturbs less; best "
        "of the repeats) / whole-process peak RSS (growth over inputs+model); each cell in its own process; "
        f"`cached` uses chunk_size={chunk}; the last two columns compare CPU times",
        "",
        f"**Largest B within {budget / 2**30:g} GiB (whole process):** "
        + ", ".join(f"{m}: {largest_within(rows, m, budget) or 'none'}" for m in MODES),
        "",
        "| B | plain | cached | cached / plain | extra time / one no-graph forward |",
        "|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["mode"], r["size"]): r for r in rows}
    for size in sorted({r["size"] for r in rows}):
        plain, cached = by_key.get(("plain", size)), by_key.get(("cached", size))
        ratio = extra = "—"
        if plain and cached and "error" not in plain and "error" not in cached:
            ratio = f"{cached['cpu_seconds'] / plain['cpu_seconds']:.2f}x"
            extra = f"{(cached['cpu_seconds'] - plain['cpu_seconds']) / cached['forward_cpu_seconds']:.2f}"
        lines.append(f"| {size:,} | {_cell(plain)} | {_cell(cached)} | {ratio} | {extra} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Two panels against B: time per step and whole-process peak RSS, the budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "error" not in r]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, color in zip(MODES, ("tab:blue", "tab:orange"), strict=True):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["size"])
        sizes = [r["size"] for r in mine]
        label = mode if mode == "plain" else f"cached (chunk {report['chunk_size']})"
        ax_time.plot(sizes, [r["seconds"] for r in mine], color=color, marker="o", label=f"{label}, wall")
        cpu = [r["cpu_seconds"] for r in mine]
        ax_time.plot(sizes, cpu, color=color, marker=".", linestyle=":", label=f"{label}, CPU")
        ax_mem.plot(sizes, [r["peak_rss_bytes"] / 2**30 for r in mine], color=color, marker="o", label=label)
    ax_mem.axhline(report["budget_bytes"] / 2**30, color="grey", linestyle="--", label="budget")
    for ax, label in ((ax_time, "time per step (s)"), (ax_mem, "peak RSS, whole process (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B (two views each)")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    ax_time.legend(fontsize=8)
    ax_mem.legend(fontsize=8)
    info = report["machine"]
    fig.suptitle(
        f"Small CNN + NT-Xent, with and without GradCache, on {info['cpu']} ({THREADS} threads), "
        f"commit {info['commit'][:7]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _run_cell(args: argparse.Namespace, mode: str, size: int) -> dict:
    repeats = 1 if args.smoke or size > 2048 else 3
    if args.smoke:  # one thread: torch may have started its pool before OMP_WAIT_POLICY was set
        import torch

        threads = torch.get_num_threads()
        try:
            return worker(mode, size, args.chunk_size, args.dim, repeats, threads=1)
        finally:
            torch.set_num_threads(threads)
    cmd = [sys.executable, __file__, "--worker", mode, str(size)]
    cmd += ["--chunk-size", str(args.chunk_size), "--dim", str(args.dim)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(THREADS)}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "size": size, "error": f"timed out after {args.timeout:g} s"}
    if done.returncode != 0:
        return {"mode": mode, "size": size, "error": f"failed (exit {done.returncode})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the cells (or one ``--worker`` cell, or ``--plot``) and write JSON, markdown and PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--budget-gib", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--smoke", action="store_true", help="two tiny sizes in this process, in seconds")
    parser.add_argument("--plot", action="store_true", help="only redraw the PNG from the JSON")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.worker:
        mode, size = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(mode, size, args.chunk_size, args.dim, repeats=3 if size <= 2048 else 1)))
        return 0
    if args.plot:
        plot(json.loads((out / "gradcache.json").read_text()), out / "gradcache.png")
        return 0
    if args.smoke:
        args.sizes, args.chunk_size, args.dim = [64, 160], 48, 16
    budget = int(args.budget_gib * 2**30)
    report = {
        "machine": machine_info(),
        "budget_bytes": budget,
        "chunk_size": args.chunk_size,
        "dim": args.dim,
        "smoke": args.smoke,
        "results": [],
    }
    over_budget: dict[str, int] = {}
    out.mkdir(parents=True, exist_ok=True)
    for size in sorted(args.sizes):
        for mode in MODES:
            if mode in over_budget:
                row = {"mode": mode, "size": size, "error": f"not run (over budget at {over_budget[mode]:,})"}
            else:
                row = _run_cell(args, mode, size)
                if "error" in row or row["peak_rss_bytes"] > budget:
                    over_budget[mode] = size
            report["results"].append(row)
            print(json.dumps(row), flush=True)
            (out / "gradcache.json").write_text(json.dumps(report, indent=2) + "\n")
            (out / "gradcache.md").write_text(markdown(report))
    try:
        plot(report, out / "gradcache.png")
    except ImportError:  # matplotlib is optional; --plot redraws later
        print("matplotlib not installed: no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
