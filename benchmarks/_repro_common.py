"""Shared pieces of the ``reproduce_*.py`` scripts: arguments, machine record, output files, digits runs.

Every reproduction writes ``<name>.json`` (config, machine, commit, results),
``<name>.md`` (the paper's figure beside ours, in the Markdown subset that
``docs/_ext/benchmark_tables.py`` renders) and ``<name>.png`` into ``--out``.
``--smoke`` shrinks every sweep to seconds for the test suite.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_ji import machine as _machine  # noqa: E402  (one machine record for every reproduction)

RESULTS = Path(__file__).resolve().parent / "results"
Figure = Any  # a matplotlib figure (matplotlib is imported lazily)


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every reproduction has: ``--smoke``, ``--seeds``, ``--out``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (the test suite runs this)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (default: the script's)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def machine() -> dict[str, object]:
    """The machine, library versions, commit (as ``reproduce_ji``) plus the load average at the start."""
    info = _machine()
    info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS", "unset")
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One Markdown sentence naming the machine and commit of a run."""
    dirty = " (dirty tree)" if info.get("dirty") else ""
    return (
        f"Machine: {info['platform']}, {info['cpu_count']} CPUs, {info['torch_threads']} torch thread(s), "
        f"load average {info['load_average'][0]} at the start; "
        f"Python {info['python']}, torch {info['torch']}; "
        f"commit {info['commit']}{dirty}."
    )


def comparison_table(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """A Markdown table with the paper's figure beside ours: ``(quantity, paper, ours)`` rows."""
    lines = ["| quantity | paper | ours |", "|---|---|---|"]
    lines += [f"| {q} | {paper} | {ours} |" for q, paper, ours in rows]
    return [*lines, ""]


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of a list of numbers (JSON-ready)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "values": [float(v) for v in arr]}


def fmt(stat: dict[str, Any], digits: int = 3) -> str:
    """``mean ± std`` of a :func:`mean_std` record."""
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long sequences (average ranks for ties)."""

    def ranks(x: Sequence[float]) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        order = np.argsort(arr, kind="stable")
        r = np.empty(len(arr))
        r[order] = np.arange(len(arr), dtype=float)
        for value in np.unique(arr):  # ties share their mean rank
            tied = arr == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def write(
    name: str,
    report: dict[str, Any],
    markdown: str,
    plot: Callable[[dict[str, Any]], Figure] | None,
    out: Path,
) -> list[Path]:
    """Write ``name``.json/.md (and .png from ``plot(report)`` when matplotlib is there); return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown)
    if plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no PNG", file=sys.stderr)
        else:
            fig = plot(report)
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=110)
            plt.close(fig)
            paths.append(out / f"{name}.png")
    print(markdown)
    print("wrote " + ", ".join(str(p) for p in paths))
    return paths


def subplots(ncols: int, width: float = 4.2, height: float = 3.4) -> tuple[Figure, Any]:
    """A row of ``ncols`` matplotlib axes (matplotlib imported here, so the scripts import without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, axes[0]


def seed_all(seed: int) -> torch.Generator:
    """Seed torch's global generator (module initialisation) and return a generator for the data."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def mlp(in_dim: int, out_dim: int, hidden: int = 128) -> torch.nn.Module:
    """A two-layer ReLU MLP ``in_dim -> hidden -> out_dim`` (no batch norm: no batch-size side channel)."""
    return torch.nn.Sequential(
        torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_dim)
    )


# ---- the trainer's data: scikit-learn digits with the trainer's small-image SimCLR augmentation ----

DIGITS_FEATURES, DIGITS_HIDDEN, DIGITS_PROJECTION = 64, 128, 32


def digits_augmentation() -> Any:
    """The ``simclr`` augmentation with the options ``contrastive train`` uses for 8x8 digits."""
    import contrastive as cl
    from contrastive.train.components import SMALL_IMAGE_SIMCLR

    return cl.get_augmentation("simclr", size=[8, 8], **SMALL_IMAGE_SIMCLR)


def train_digits(
    loss: torch.nn.Module,
    *,
    seed: int,
    batch_size: int,
    steps: int,
    queue_size: int = 0,
    key_momentum: float | None = None,
    lr: float = 1e-3,
    checkpoints: Sequence[int] = (),
) -> list[dict[str, float]]:
    """Train the trainer's MLP encoder + projection head on digits with ``loss``; evaluate held-out.

    Two augmented views per sample, Adam at ``lr``, ``steps`` mini-batches of
    ``batch_size`` (reshuffled each epoch). With ``queue_size`` > 0 the detached
    projections of past batches are kept in a :class:`~contrastive.MemoryQueue` and
    passed as ``negatives=``; with ``key_momentum`` the queued keys come from a momentum
    (exponential moving average) copy of the model, as in MoCo. Returns one record per entry
    of ``checkpoints`` (and
    the last step): step, linear-probe and kNN accuracy of the encoder features, alignment
    and uniformity of the held-out projections.
    """
    import contrastive as cl
    from contrastive.train.components import make_views
    from contrastive.train.data import load_dataset
    from contrastive.train.evaluate import evaluate
    from contrastive.train.models import build_model

    g = seed_all(seed)
    data = load_dataset("digits", seed)
    train_x, _ = data.split("train")
    model = build_model("mlp", data.sample_shape, DIGITS_FEATURES, DIGITS_HIDDEN, DIGITS_PROJECTION)
    augment = digits_augmentation()
    queue = cl.MemoryQueue(queue_size, DIGITS_PROJECTION) if queue_size else None
    key_model = (
        copy.deepcopy(model).requires_grad_(False) if queue is not None and key_momentum is not None else None
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batch_size = min(batch_size, train_x.shape[0])
    per_epoch = train_x.shape[0] // batch_size
    marks = sorted({*checkpoints, steps})
    records: list[dict[str, float]] = []
    order = torch.randperm(train_x.shape[0], generator=g)
    for step in range(1, steps + 1):
        k = (step - 1) % per_epoch
        if k == 0 and step > 1:
            order = torch.randperm(train_x.shape[0], generator=g)
        xb = train_x[order[k * batch_size : (k + 1) * batch_size]]
        v1, v2 = make_views(augment, xb, 2, g)
        z1, z2 = model(v1), model(v2)
        value = loss(z1, z2) if queue is None else loss(z1, z2, negatives=queue)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if key_model is not None:
            with torch.no_grad():
                for key_p, p in zip(key_model.parameters(), model.parameters(), strict=True):
                    key_p.mul_(key_momentum).add_(p, alpha=1 - key_momentum)
                queue.enqueue(torch.cat([key_model(v1), key_model(v2)]))
        elif queue is not None:
            queue.enqueue(torch.cat([z1, z2]).detach())
        if step in marks:
            metrics = evaluate(model, augment, data, torch.device("cpu"), seed + 10_000)
            records.append(
                {
                    "step": step,
                    "accuracy": float(metrics["linear_probe_accuracy"]),
                    "knn_accuracy": float(metrics["knn_accuracy"]),
                    "alignment": float(metrics["alignment"]),
                    "uniformity": float(metrics["uniformity"]),
                    "train_loss": float(value.detach()),
                }
            )
    return records
