"""Forward+backward time and peak memory of contrastive losses: ours against the libraries people use.

Families (fp32, CPU, D=128, two views of B samples, 2N = 2B embeddings):

* ``nt_xent``: ours (``get_loss("nt_xent")``, default options, and ``validate_args=False``), the
  materialised 10-line SimCLR loss (``torch``), lightly ``NTXentLoss``, pytorch-metric-learning
  ``NTXentLoss`` (where its O(N^3) memory fits);
* ``supcon`` (10 classes): ours, a materialised SupCon, pytorch-metric-learning ``SupConLoss``;
* ``hard`` (Robinson et al., beta=1, tau_plus=0.1): ours, the materialised formula;
* ``clip`` (B pairs, 2N = 2B features): ours (``ClipLoss``), open_clip ``ClipLoss``.

**Time** is measured in one process per family and size, in alternating rounds (every round
times each implementation once, in an order shuffled per round with a fixed seed: a rotating
order keeps each implementation behind the same predecessor, and the one timed right after
a peer's large allocations was measured 13-16 % slower in millisecond cells) after one
warm-up call each; the table
gives the median time and the median of the per-round ratios ours / other, which cancels most
of the drift of a shared machine; an implementation whose warm-up call is slow takes part
in the first rounds only (:data:`CELL_BUDGET`), its ratio pairs those rounds.
``OMP_WAIT_POLICY=PASSIVE`` and a fixed thread count are set before torch is imported (the
default spin-wait inflated small cells 5-60x under load).

**Bound**: the time this machine needs for the loss's matmul FLOPs and exponentials, measured
in the same process (``4·(2N)²·D`` FLOPs and ``(2N)²`` exps for nt_xent/supcon/hard as in the
issue; ``6·B²·D`` and ``B²`` for clip: one forward and two backward products).

**Memory** is the growth of a fresh process's peak resident set over its resident set after
the inputs were built (one process per cell; ``--memory-sizes``).

Run ``python benchmarks/bench_losses.py`` (``--smoke`` for a seconds-long check). Peers that
are not installed are reported as such.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SIZES = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
MEMORY_SIZES = [1024, 4096, 16384]
LARGE_SIZES = [65536, 262144]
FAMILIES = ["nt_xent", "supcon", "hard", "clip", "dcl", "multilabel"]
TEMPERATURE = 0.1
DIM = 128
CLASSES = 10
#: Multi-label family: each sample carries each of TAGS tags with probability TAG_RATE.
TAGS, TAG_RATE = 20, 0.1
#: Largest 2N each peer runs at (memory: PML's NT-Xent is O(N^3); time: PML SupCon is slow).
MAX_SIZE = {"pml": 1024, "pml-supcon": 4096}
#: Seconds of timed calls one implementation may take in a cell: one whose warm-up call is slower takes
#: part in the first rounds only (at least :data:`MIN_ROUNDS`), the others in all; only the peers' slow
#: cells meet it (PML's NT-Xent: ~7 s a call at 2N = 512 on the 2-core CPU).
CELL_BUDGET, MIN_ROUNDS = 120.0, 3


def implementations(family: str) -> dict:
    """Return ``{name: (make, call)}``: ``make()`` builds the loss, ``call(loss, z1, z2, y)`` runs it."""
    import torch
    import torch.nn.functional as F

    import contrastive as cl

    def ours(**options):
        name = {"supcon": "supcon", "multilabel": "supcon", "dcl": "dcl"}.get(family, "nt_xent")
        if family == "clip":
            return lambda: cl.get_loss("clip", **options)
        if family == "hard":
            options["sampler"] = cl.get_sampler("hard", beta=1.0, tau_plus=0.1)
        return lambda: cl.get_loss(name, temperature=TEMPERATURE, **options)

    def call_ours(loss, z1, z2, y):
        return loss(z1, z2, labels=y) if family in ("supcon", "multilabel") else loss(z1, z2)

    impls = {"ours": (ours(), call_ours), "ours (validate_args=False)": (ours(validate_args=False), call_ours)}
    if family == "nt_xent":
        impls["torch"] = (lambda: None, lambda _, z1, z2, y: materialised_nt_xent(z1, z2))
        impls["lightly"] = (_peer("lightly.loss", "NTXentLoss", temperature=TEMPERATURE),
                            lambda loss, z1, z2, y: loss(z1, z2))
        impls["pml"] = (_peer("pytorch_metric_learning.losses", "NTXentLoss", temperature=TEMPERATURE),
                        lambda loss, z1, z2, y: loss(torch.cat([z1, z2]), torch.arange(z1.shape[0]).repeat(2)))
    elif family == "supcon":
        impls["torch"] = (lambda: None, lambda _, z1, z2, y: materialised_supcon(z1, z2, y))
        impls["pml-supcon"] = (_peer("pytorch_metric_learning.losses", "SupConLoss", temperature=TEMPERATURE),
                               lambda loss, z1, z2, y: loss(torch.cat([z1, z2]), y.repeat(2)))
    elif family == "hard":
        impls["torch"] = (lambda: None, lambda _, z1, z2, y: materialised_hard(z1, z2))
    elif family == "multilabel":
        impls["torch"] = (lambda: None, lambda _, z1, z2, y: materialised_supcon(z1, z2, y))
    elif family == "dcl":
        impls["torch"] = (lambda: None, lambda _, z1, z2, y: materialised_dcl(z1, z2))
        # lightly's DCLLoss adds two log-sum-exps where the paper takes one (its PR #1826): same cost
        impls["lightly"] = (_peer("lightly.loss", "DCLLoss", temperature=TEMPERATURE),
                            lambda loss, z1, z2, y: loss(z1, z2))
    else:
        scale = torch.tensor(math.log(1 / 0.07))

        def open_clip_call(loss, z1, z2, y):
            return loss(F.normalize(z1, dim=1), F.normalize(z2, dim=1), scale.exp())

        impls["open_clip"] = (_peer("open_clip.loss", "ClipLoss"), open_clip_call)
    return impls


def _peer(module: str, name: str, **options):
    """A factory of a peer library's loss (ImportError is raised when it is called, if absent)."""
    def make():
        import importlib

        return getattr(importlib.import_module(module), name)(**options)

    return make


def materialised_nt_xent(z1, z2):
    """The 10-line SimCLR loss: the 2N x 2N logits, the diagonal masked, cross entropy."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / TEMPERATURE).fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    return F.cross_entropy(logits, torch.cat([torch.arange(b, 2 * b), torch.arange(b)]))


def materialised_supcon(z1, z2, y):
    """SupCon (L_out) from the full matrix: mean log-probability of each anchor's positives (labels or tags)."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    labels = y.repeat(2, *([1] * (y.dim() - 1)))
    logits = (z @ z.T / TEMPERATURE).fill_diagonal_(float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    if labels.dim() == 2:  # multi-hot: positives share at least one tag
        tags = labels.float()
        positive = (tags @ tags.T > 0).fill_diagonal_(False)
    else:
        positive = (labels[:, None] == labels[None, :]).fill_diagonal_(False)
    count = positive.sum(1)
    per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(1) / count.clamp(min=1)
    return per_anchor[count > 0].mean()


def materialised_dcl(z1, z2):
    """Decoupled contrastive loss (Yeh et al., Eq. 6) from the full matrix: positives out of the denominator."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    b = z1.shape[0]
    logits = z @ z.T / TEMPERATURE
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    rows = torch.arange(2 * b)
    positive = logits[rows, partner]
    masked = logits.clone()
    masked[rows, rows] = float("-inf")
    masked[rows, partner] = float("-inf")
    return (torch.logsumexp(masked, dim=1) - positive).mean()


def materialised_hard(z1, z2, beta=1.0, tau_plus=0.1):
    """Robinson et al.'s hard-negative loss for two views from the full matrix (their formula)."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    b = z1.shape[0]
    sim = z @ z.T / TEMPERATURE
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    pos = torch.exp(sim.gather(1, partner[:, None]).squeeze(1))
    negative = torch.ones_like(sim, dtype=torch.bool).fill_diagonal_(False)
    negative[torch.arange(2 * b), partner] = False
    n_neg = 2 * b - 2
    exp_sim = torch.exp(sim).masked_fill(~negative, 0.0)
    weights = torch.exp(beta * sim).masked_fill(~negative, 0.0)
    reweighted = (weights * exp_sim).sum(1) / (weights.sum(1) / n_neg)
    ng = torch.clamp((reweighted - tau_plus * n_neg * pos) / (1 - tau_plus), min=n_neg * math.exp(-1 / TEMPERATURE))
    return -torch.log(pos / (pos + ng)).mean()


def inputs(family: str, size: int, seed: int = 0):
    """Two views of ``size // 2`` samples (leaves) and 10-class labels (multi-hot tags for ``multilabel``)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b = size // 2
    z1 = torch.randn(b, DIM, generator=g).requires_grad_()
    z2 = torch.randn(b, DIM, generator=g).requires_grad_()
    if family == "multilabel":
        return z1, z2, (torch.rand(b, TAGS, generator=g) < TAG_RATE).to(torch.uint8)
    return z1, z2, torch.randint(0, CLASSES, (b,), generator=g)


def _step(call, loss, z1, z2, y) -> float:
    """Time one forward+backward."""
    z1.grad = z2.grad = None
    start = time.perf_counter()
    call(loss, z1, z2, y).backward()
    return time.perf_counter() - start


def time_cell(family: str, size: int, rounds: int, only: list[str] | None) -> list[dict]:
    """Alternating rounds of every available implementation at one size; one row per implementation."""
    z1, z2, y = inputs(family, size)
    ready, rows, warm_up = {}, [], {}
    for name, (make, call) in implementations(family).items():
        if only and name not in only:
            continue
        if size > MAX_SIZE.get(name, math.inf):
            continue
        try:
            loss = make()
            warm_up[name] = _step(call, loss, z1, z2, y)  # warm-up (and the registry's first load)
            ready[name] = (loss, call)
        except ImportError as error:
            rows.append({"family": family, "implementation": name, "size": size, "error": f"not installed ({error.name})"})
        except (TypeError, ValueError) as error:  # e.g. an option an older commit does not have
            rows.append({"family": family, "implementation": name, "size": size, "error": f"failed: {error}"[:60]})
    # an implementation whose rounds would exceed the budget takes part in the first rounds only
    share = {name: max(min(rounds, MIN_ROUNDS), min(rounds, int(CELL_BUDGET / max(t, 1e-9))))
             for name, t in warm_up.items()}
    times = {name: [] for name in ready}
    order = random.Random(size)
    for r in range(rounds):
        names = [name for name in ready if share[name] > r]
        for name in order.sample(names, len(names)):
            loss, call = ready[name]
            times[name].append(_step(call, loss, z1, z2, y))
    for name in ready:
        row = {"family": family, "implementation": name, "size": size, "dim": DIM, "rounds": share[name],
               "seconds": statistics.median(times[name]), "load_average": os.getloadavg()[0]}
        if "ours" in times and name != "ours":  # paired by round: the rounds both took part in
            row["ours_over_this"] = statistics.median(o / t for o, t in zip(times["ours"], times[name]))
        rows.append(row)
    return rows


def machine_rates(threads: int) -> dict:
    """Measured fp32 matmul FLOP/s and exp/s of this machine at ``threads`` threads."""
    import torch

    a, b = torch.randn(2048, DIM), torch.randn(DIM, 2048)
    m = torch.randn(2048, 2048)
    for _ in range(3):
        a @ b, torch.exp(m)
    mm, ex = [], []
    for _ in range(7):
        t = time.perf_counter()
        a @ b
        mm.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.exp(m)
        ex.append(time.perf_counter() - t)
    return {"matmul_flops_per_s": 2 * 2048 * 2048 * DIM / min(mm), "exp_per_s": 2048 * 2048 / min(ex),
            "threads": threads}


def bound_seconds(family: str, size: int, rates: dict) -> float:
    """The matmul-and-exp bound of one forward+backward at ``size`` embeddings."""
    if family == "clip":
        b = size // 2
        flops, exps = 6 * b * b * DIM, b * b
    else:
        flops, exps = 4 * size * size * DIM, size * size
    return flops / rates["matmul_flops_per_s"] + exps / rates["exp_per_s"]


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def memory_worker(family: str, name: str, size: int) -> dict:
    """Peak resident growth of one forward+backward in this process, over its RSS after the inputs.

    The peak is the kernel's high-water mark after resetting it (``/proc/self/clear_refs``), so it
    does not include what the parent held before the fork (``ru_maxrss`` survives ``exec``).
    """
    z1, z2, y = inputs(family, size)
    make, call = implementations(family)[name]
    loss = make()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current RSS
    baseline = _status_bytes("VmRSS")
    seconds = _step(call, loss, z1, z2, y)
    peak = _status_bytes("VmHWM")
    return {"family": family, "implementation": name, "size": size, "peak_bytes": max(0, peak - baseline),
            "peak_rss_bytes": peak, "seconds_single": seconds}


def memory_cell(family: str, name: str, size: int, threads: int, timeout: float) -> dict:
    """Run :func:`memory_worker` in a fresh process."""
    cmd = [sys.executable, __file__, "--memory-worker", family, name, str(size), "--threads", str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return {"family": family, "implementation": name, "size": size, "error": "timed out"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"family": family, "implementation": name, "size": size, "error": f"failed: {last[:80]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine(threads: int | None = None) -> dict:
    """Machine, software and commit the tables were measured on (``threads``: torch's current count)."""
    import torch

    threads = torch.get_num_threads() if threads is None else threads

    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()
        except OSError:
            return ""

    model = next((line.split(":", 1)[1].strip() for line in run(["lscpu"]).splitlines()
                  if line.startswith("Model name")), platform.processor())
    versions = {}
    for module in ("lightly", "open_clip", "pytorch_metric_learning"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - absent or broken: reported as absent
            versions[module] = None
    with open("/proc/meminfo") as meminfo:
        memory = next((int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal")), 0)
    return {"cpu": model, "cores": os.cpu_count(), "memory_bytes": memory, "python": platform.python_version(),
            "torch": torch.__version__, "threads": threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "peers": versions, "commit": run(["git", "rev-parse", "HEAD"]),
            "dirty": bool(run(["git", "status", "--porcelain", "--", "contrastive"]))}


def machine_lines(report: dict, peers: bool = True) -> list[str]:
    """The CPU, software, (peers,) commit and load average lines above a table."""
    info, load = report["machine"], report["load_average"]
    return [
        f"- CPU: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['threads']} threads, "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}, Python {info['python']}",
        *([f"- peers: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in info["peers"].items())] if peers else []),
        f"- commit: `{info['commit']}`" + (" (with uncommitted changes to contrastive/)" if info["dirty"] else ""),
        f"- load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f}",
    ]


def write_report(output: str, report: dict, render) -> None:  # noqa: ANN001
    """Write ``<output>.json`` and ``<output>.md`` (``render(report)``) and say so."""
    Path(output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(output + ".md").write_text(render(report))
    print(f"wrote {output}.json and .md")


def markdown(report: dict) -> str:
    """Render the report as markdown tables (one per family) with the machine above them."""
    info, rates = report["machine"], report["rates"]
    lines = [
        "# Contrastive losses, forward+backward, D=128, fp32, CPU",
        "",
        *machine_lines(report),
        f"- measured rates: {rates['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s fp32 matmul, "
        f"{rates['exp_per_s'] / 1e9:.2f} G exp/s",
        f"- time: median of rounds in a shuffled order (an implementation slower than ~{CELL_BUDGET:.0f} s / rounds "
        f"takes part in the first rounds only, at least {MIN_ROUNDS}; the json gives the counts); "
        "ratio: median of per-round ratios ours / other over the rounds both took part in; "
        "bound: matmul FLOPs + exps at the measured rates",
        "",
    ]
    rows = report["timing"]
    for family in FAMILIES:
        mine = [r for r in rows if r["family"] == family]
        if not mine:
            continue
        names = list(dict.fromkeys(r["implementation"] for r in mine))
        others = [n for n in names if n != "ours"]
        lines += [f"## {family}", "",
                  "| 2N | " + " | ".join(f"{n} (ms)" for n in names) + " | "
                  + " | ".join(f"ours / {n}" for n in others) + " | ours / bound |",
                  "|---:|" + "---:|" * (len(names) + len(others) + 1)]
        for size in sorted({r["size"] for r in mine}):
            by = {r["implementation"]: r for r in mine if r["size"] == size}
            cells = [("—" if n not in by else by[n].get("error") or f"{by[n]['seconds'] * 1e3:,.1f}") for n in names]
            ratios = [f"{by[n]['ours_over_this']:.2f}x" if n in by and "ours_over_this" in by[n] else "—"
                      for n in others]
            ours = by.get("ours")
            bound = f"{ours['seconds'] / ours['bound_seconds']:.2f}x" if ours and "seconds" in ours else "—"
            lines.append(f"| {size:,} | " + " | ".join(cells + ratios + [bound]) + " |")
        lines.append("")
    memory = report["memory"]
    if memory:
        again = f" (measured at `{info['memory_commit'][:7]}`)" if info.get("memory_commit") else ""
        lines += [f"## peak memory above the inputs (MiB), one process per cell{again}", "",
                  "| loss | implementation | " + " | ".join(f"{s:,}" for s in sorted({m["size"] for m in memory})) + " |",
                  "|---|---|" + "---:|" * len({m["size"] for m in memory})]
        sizes = sorted({m["size"] for m in memory})
        for key in dict.fromkeys((m["family"], m["implementation"]) for m in memory):
            by = {m["size"]: m for m in memory if (m["family"], m["implementation"]) == key}
            cells = [("—" if s not in by else by[s].get("error") or f"{by[s]['peak_bytes'] / 2**20:,.0f}") for s in sizes]
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    timed = {r["size"] for r in rows if r["family"] == "nt_xent"}
    large = [m for m in memory if m["family"] == "nt_xent" and m["size"] not in timed and "seconds_single" in m]
    if large:  # the sizes measured for ours only: the memory cell's one call is their time
        lines += [f"## nt_xent, one call of ours at the large sizes, from the memory cells{again}", "",
                  "| 2N | implementation | time (s) | bound (s) | time / bound |", "|---:|---|---:|---:|---:|"]
        for m in large:
            bound = bound_seconds("nt_xent", m["size"], rates)
            lines.append(f"| {m['size']:,} | {m['implementation']} | {m['seconds_single']:,.1f} | {bound:,.1f} "
                         f"| {m['seconds_single'] / bound:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def rounds_for(size: int) -> int:
    """More rounds where a cell is short (a millisecond cell swings by 10-20 % between rounds on a shared machine)."""
    return 101 if size <= 512 else 31 if size <= 1024 else 9 if size <= 2048 else 5 if size <= 4096 else 3


def main(argv: list[str] | None = None) -> int:
    """Measure and write ``<output>.json`` and ``<output>.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=MEMORY_SIZES)
    parser.add_argument("--large-sizes", type=int, nargs="*", default=LARGE_SIZES,
                        help="nt_xent sizes measured for ours only (time of one call and memory)")
    parser.add_argument("--implementations", nargs="*", default=None, help="restrict to these names")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round, no memory cells")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure the memory cells again and keep the timing of the existing <output>.json")
    parser.add_argument("--output", default=str(RESULTS / "losses"))
    parser.add_argument("--memory-worker", nargs=3, metavar=("FAMILY", "NAME", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_worker:
        family, name, size = args.memory_worker
        print(json.dumps(memory_worker(family, name, int(size))))
        return 0
    if args.smoke:
        args.sizes, args.memory_sizes, args.large_sizes = [16, 64], [], []
    start_load = os.getloadavg()[0]
    info = machine(args.threads)  # the commit whose code this process imported
    rates = machine_rates(args.threads)
    timing = []
    if args.memory_only:
        previous = json.loads(Path(args.output + ".json").read_text())
        info, rates, timing = previous["machine"], previous["rates"], previous["timing"]
        start_load = previous["load_average"][0]
        info["memory_commit"] = machine(args.threads)["commit"]
    for family in args.families if not args.memory_only else []:
        for size in args.sizes:
            for row in time_cell(family, size, 1 if args.smoke else rounds_for(size), args.implementations):
                if row["implementation"] == "ours" and "seconds" in row:
                    row["bound_seconds"] = bound_seconds(family, size, rates)
                timing.append(row)
                print(json.dumps(row), flush=True)
    memory = []
    for family in args.families:
        names = [n for n in implementations(family) if not args.implementations or n in args.implementations]
        for size in args.memory_sizes:
            for name in names:
                if size <= MAX_SIZE.get(name, math.inf) and (size <= 16384 or name.startswith("ours")):
                    memory.append(memory_cell(family, name, size, args.threads, args.timeout))
                    print(json.dumps(memory[-1]), flush=True)
    if "nt_xent" in args.families:
        for size in args.large_sizes:
            cell = memory_cell("nt_xent", "ours", size, args.threads, args.timeout)
            memory.append(cell)
            print(json.dumps(cell), flush=True)
    report = {"machine": info, "rates": rates, "load_average": [start_load, os.getloadavg()[0]],
              "timing": timing, "memory": memory}
    write_report(args.output, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
