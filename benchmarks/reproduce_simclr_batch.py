"""Reproduce SimCLR's batch-size claim (Chen et al., ICML 2020): more negatives per step, better features.

On the trainer's data (sklearn digits, the trainer's MLP encoder + projection head and
its small-image ``simclr`` augmentation), ``nt_xent`` at temperature 0.2:

* batch size sweep at a fixed number of epochs (SimCLR's Figure 9 protocol), with the
  learning rate scaled as sqrt(batch / 256) (the square-root scaling SimCLR recommends
  for small epoch counts; we use Adam, not LARS);
* negatives from a :class:`~contrastive.MemoryQueue` at a fixed batch of 32: the queued
  keys come from a momentum copy of the model (m = 0.99, as in MoCo), added to the
  in-batch negatives through ``negatives=``.

Linear-probe accuracy of the encoder features on the held-out split (the trainer's
evaluation). Every loss runs through the library's chunked O(N)-memory engine.

Run: ``python benchmarks/reproduce_simclr_batch.py [--smoke]``.
"""

from __future__ import annotations

import math
from typing import Any

import _repro_common as common
import numpy as np
import torch

import contrastive as cl

NAME = "simclr_batch_size"
TRAIN_SAMPLES = 1437  # the trainer's 80% split of the 1,797 digits


def run(args: Any) -> dict[str, Any]:
    """Both sweeps, every seed; records at each epoch checkpoint."""
    loss = cl.get_loss("nt_xent", temperature=args.temperature)
    batch: dict[str, dict[str, list[float]]] = {}
    for b in args.batch_sizes:
        per_epoch = TRAIN_SAMPLES // b
        marks = [e * per_epoch for e in args.epochs]
        lr = args.lr * math.sqrt(b / 256)
        for seed in range(args.seeds):
            records = common.train_digits(
                loss, seed=seed, batch_size=b, steps=marks[-1], checkpoints=marks, lr=lr
            )
            for epochs, rec in zip(args.epochs, records, strict=True):
                batch.setdefault(f"{epochs}", {}).setdefault(str(b), []).append(rec["accuracy"])
        print("batch", b, {e: round(float(np.mean(v[str(b)])), 4) for e, v in batch.items()}, flush=True)
    queue: dict[str, list[float]] = {}
    per_epoch = TRAIN_SAMPLES // args.queue_batch
    for size in args.queue_sizes:
        for seed in range(args.seeds):
            records = common.train_digits(
                loss, seed=seed, batch_size=args.queue_batch, steps=args.epochs[-1] * per_epoch,
                queue_size=size, key_momentum=0.99 if size else None,
                lr=args.lr * math.sqrt(args.queue_batch / 256),
            )  # fmt: skip
            queue.setdefault(str(size), []).append(records[-1]["accuracy"])
        print("queue", size, round(float(np.mean(queue[str(size)])), 4), flush=True)
    return {
        "batch_size": {e: {b: common.mean_std(v) for b, v in per.items()} for e, per in batch.items()},
        "queue": {s: common.mean_std(v) for s, v in queue.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    """Accuracy per batch size and epochs, per queue size, and the paper's claim beside ours."""
    cfg, res = report["config"], report["results"]
    bs, epochs = [str(b) for b in cfg["batch_sizes"]], [str(e) for e in cfg["epochs"]]
    lines = [
        "# SimCLR reproduction: linear-probe accuracy vs batch size and vs queued negatives",
        "",
        f"sklearn digits (the trainer's data, MLP encoder and augmentation), `nt_xent` at temperature "
        f"{cfg['temperature']}, Adam with lr {cfg['lr']}·sqrt(batch/256); held-out linear-probe accuracy, "
        f"mean ± std over {cfg['seeds']} seeds.",
        "",
        "| batch size | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
        "|---:|" + "---:|" * len(epochs),
    ]
    for b in bs:
        lines.append(f"| {b} | " + " | ".join(common.fmt(res["batch_size"][e][b]) for e in epochs) + " |")
    lines += [
        "",
        f"Queue of momentum keys (m = 0.99) at batch {cfg['queue_batch']}, {epochs[-1]} epochs:",
        "",
        "| queued negatives | probe accuracy |",
        "|---:|---:|",
    ]
    lines += [f"| {s} | {common.fmt(v)} |" for s, v in res["queue"].items()]

    def trend(per: dict[str, Any], keys: list[str]) -> str:
        values = [per[k]["mean"] for k in keys]
        corr = common.spearman([float(k) for k in keys], values)
        return f"{values[0]:.3f} → {values[-1]:.3f} (rank corr. {corr:+.2f})"

    lines.append("")
    rows = [
        (f"batch {bs[0]} → {bs[-1]}, {e} epochs", "accuracy rises with batch size (Fig. 9)",
         trend(res["batch_size"][e], bs))
        for e in epochs
    ]  # fmt: skip
    first, last = res["batch_size"][epochs[0]], res["batch_size"][epochs[-1]]
    gap_short = first[bs[-1]]["mean"] - first[bs[0]]["mean"]
    last_gap = last[bs[-1]]["mean"] - last[bs[0]]["mean"]
    rows.append(("large − small batch gap, short vs long training", "shrinks with more epochs",
                 f"{gap_short:+.3f} at {epochs[0]} vs {last_gap:+.3f} at {epochs[-1]} epochs"))  # fmt: skip
    qs = list(res["queue"])
    rows.append(
        (f"queue {qs[0]} → {qs[-1]} negatives", "more negatives help (MoCo's queue)", trend(res["queue"], qs))
    )
    lines += common.comparison_table(rows)
    lines += [common.machine_line(report["machine"]), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> common.Figure:
    """Accuracy against batch size (one line per epoch budget) and against queue size."""
    fig, (ax0, ax1) = common.subplots(2)
    cfg, res = report["config"], report["results"]
    for e, per in res["batch_size"].items():
        bs = cfg["batch_sizes"]
        ax0.errorbar(bs, [per[str(b)]["mean"] for b in bs], yerr=[per[str(b)]["std"] for b in bs],
                     marker="o", capsize=3, label=f"{e} epochs")  # fmt: skip
    ax0.set(xscale="log", xlabel="batch size", ylabel="linear probe accuracy", title="batch size")
    ax0.legend()
    sizes = [int(s) for s in res["queue"]]
    xs = [max(s, 1) for s in sizes]
    queue = res["queue"]
    ax1.errorbar(xs, [queue[str(s)]["mean"] for s in sizes], yerr=[queue[str(s)]["std"] for s in sizes],
                 marker="o", capsize=3)  # fmt: skip
    ax1.set(xscale="log", xlabel="queued negatives (0 plotted at 1)", ylabel="linear probe accuracy",
            title=f"queue, batch {cfg['queue_batch']}")  # fmt: skip
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both sweeps and write the results."""
    p = common.parser(__doc__)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        args.batch_sizes, args.epochs, args.queue_sizes, args.queue_batch = [512, 1024], [1], [0, 64], 512
        args.seeds = args.seeds or 1
    else:
        args.batch_sizes, args.epochs = [16, 32, 64, 128, 256, 512, 1024], [5, 25]
        args.queue_sizes, args.queue_batch, args.seeds = [0, 128, 512, 2048], 32, args.seeds or 2
    report: dict[str, Any] = {
        "experiment": "Chen et al. (SimCLR, ICML 2020): larger batches (more negatives) help",
        "config": {
            "batch_sizes": args.batch_sizes,
            "epochs": args.epochs,
            "queue_sizes": args.queue_sizes,
            "queue_batch": args.queue_batch,
            "temperature": args.temperature,
            "lr": args.lr,
            "seeds": args.seeds,
            "smoke": args.smoke,
        },  # fmt: skip
        "machine": common.machine(),
    }
    report["results"] = run(args)
    common.write(NAME, report, markdown(report), plot, args.out)
    return report


if __name__ == "__main__":
    main()
