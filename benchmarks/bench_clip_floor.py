"""How close CLIP's loss can get to the matmul-and-exp bound of ``bench_losses.py`` on this machine.

``bench_losses.py`` bounds CLIP's forward+backward by ``6·B²·D`` matmul FLOPs and ``B²``
exponentials at the rates of one probe product (``2,048 x 128`` by ``128 x 2,048``): one product
forms ``S = X·Yᵀ``, two more form ``dX = G·Y`` and ``dY = Gᵀ·X``. This script times, in
rounds in a shuffled order in one process (fp32, D = 128, the thread count fixed,
``OMP_WAIT_POLICY=PASSIVE``), what an implementation has to run at the least:

* ``recompute floor``: what an O(N)-memory loss runs, tile by tile with the engine's tile edge
  (:func:`contrastive.engine.dispatch.plan_tiles`): per tile the forward product and its
  ``exp2``, the backward's recomputed product and ``exp2``, and the two gradient products
  (``addmm_``), and nothing else;
* ``materialised floor``: the same without recomputation, on the whole ``B x B`` matrix held in
  memory: the three products and one ``exp2``;
* ``ours``: ``contrastive.ClipLoss()`` forward+backward (as ``bench_losses.py`` calls it).

The table gives each against the bound. Run ``python benchmarks/bench_clip_floor.py``
(``--smoke`` for a seconds-long check); it writes ``results/clip_floor.json`` and ``.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_losses  # noqa: E402

SIZES = [8192, 16384]  # 2N = 2B


def recompute_floor(x, y, block: int):
    """The products and exponentials of an O(N)-memory forward+backward over ``block`` tiles.

    Returns ``(E·Y, Eᵀ·X)`` with ``E = 2^(X·Yᵀ)``: the work of the gradients with unit coefficients.
    """
    import torch

    gx, gy = torch.zeros_like(x), torch.zeros_like(y)
    for i in range(0, x.shape[0], block):
        for j in range(0, y.shape[0], block):
            torch.mm(x[i:i + block], y[j:j + block].T).exp2_()  # forward: statistics only
    for i in range(0, x.shape[0], block):
        for j in range(0, y.shape[0], block):
            g = torch.mm(x[i:i + block], y[j:j + block].T).exp2_()  # backward: the tile again
            gx[i:i + block].addmm_(g, y[j:j + block])
            gy[j:j + block].addmm_(g.T, x[i:i + block])
    return gx, gy


def materialised_floor(x, y):
    """The three products and one ``exp2`` of a forward+backward that keeps the whole matrix (same returns)."""
    import torch

    g = torch.mm(x, y.T).exp2_()
    return torch.mm(g, y), torch.mm(g.T, x)


def measure(size: int, rounds: int, rates: dict) -> dict:
    """Rounds (shuffled) of ours and both floors at ``size`` = 2B embeddings."""
    import torch

    from contrastive.engine.dispatch import plan_tiles

    z1, z2, labels = bench_losses.inputs("clip", size)
    make, call = bench_losses.implementations("clip")["ours"]
    loss = make()
    b = size // 2
    block, _ = plan_tiles(None, b, b, 1)
    x, y = (torch.nn.functional.normalize(z, dim=1).detach() * 0.1 for z in (z1, z2))  # |s| small: exp2 finite
    work = {
        "ours": lambda: bench_losses._step(call, loss, z1, z2, labels),
        "recompute floor": lambda: _timed(recompute_floor, x, y, block),
        "materialised floor": lambda: _timed(materialised_floor, x, y),
    }
    times = {name: [] for name in work}
    for name in work:  # warm-up
        work[name]()
    order = random.Random(size)  # a shuffled order per round, as bench_losses.py (a rotating one biased it)
    for _ in range(rounds):
        for name in order.sample(list(work), len(work)):
            times[name].append(work[name]())
    bound = bench_losses.bound_seconds("clip", size, rates)
    row = {"size": size, "block": block, "rounds": rounds, "bound_seconds": bound,
           "load_average": os.getloadavg()[0]}
    for name, values in times.items():
        row[name] = statistics.median(values)
    row["ours / recompute floor"] = statistics.median(o / f for o, f in zip(times["ours"], times["recompute floor"]))
    return row


def _timed(fn, *args) -> float:
    """Seconds of one call."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def markdown(report: dict) -> str:
    """The table with the machine above it."""
    rates = report["rates"]
    lines = [
        "# CLIP forward+backward against its bound, D=128, fp32, CPU",
        "",
        *bench_losses.machine_lines(report, peers=False),
        f"- probe rates (as `bench_losses.py`): {rates['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s fp32 matmul, "
        f"{rates['exp_per_s'] / 1e9:.2f} G exp/s; bound = 6·B²·D FLOPs + B² exps at those rates",
        "- time: median of rounds in a shuffled order; ours / recompute floor: median of per-round ratios",
        "",
        "| 2N | tile | ours (ms) | recompute floor (ms) | materialised floor (ms) | bound (ms) "
        "| ours / bound | recompute floor / bound | materialised floor / bound | ours / recompute floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        bound = row["bound_seconds"]
        lines.append(
            f"| {row['size']:,} | {row['block']:,} | {row['ours'] * 1e3:,.1f} | {row['recompute floor'] * 1e3:,.1f} "
            f"| {row['materialised floor'] * 1e3:,.1f} | {bound * 1e3:,.1f} | {row['ours'] / bound:.2f}x "
            f"| {row['recompute floor'] / bound:.2f}x | {row['materialised floor'] / bound:.2f}x "
            f"| {row['ours / recompute floor']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure and write ``<output>.json`` and ``<output>.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="one small size, one round")
    parser.add_argument("--output", default=str(bench_losses.RESULTS / "clip_floor"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.sizes, args.rounds = [256], 1
    start_load = os.getloadavg()[0]
    info, rates = bench_losses.machine(args.threads), bench_losses.machine_rates(args.threads)
    rows = []
    for size in args.sizes:
        rows.append(measure(size, args.rounds, rates))
        print(json.dumps(rows[-1]), flush=True)
    report = {"machine": info, "rates": rates, "load_average": [start_load, os.getloadavg()[0]], "rows": rows}
    bench_losses.write_report(args.output, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
