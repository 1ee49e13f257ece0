"""Reproduce HaoChen et al. (NeurIPS 2021): the spectral loss learns the augmentation graph's eigenvectors.

A small augmentation graph with known adjacency: N augmented inputs (nodes) in K
clusters; edge weights w_{xx'} (symmetric, summing to 1) are drawn large within a cluster
and small across clusters, so the clusters are nearly disconnected. The representation
is a free table f: node -> R^k (a one-hot input through a linear layer). Every step
samples B positive pairs (x, x') with probability w_{xx'} and applies the library's
``spectral`` loss to (f(x), f(x')), whose negative term over i != j pairs sees independent
draws of the node marginal w_x. Tracked:

* the sin-theta distance between the column span of D^{1/2} F (row x of F is f(x),
  D = diag(w_x)) and the top-k eigenvectors of the normalised adjacency
  D^{-1/2} A D^{-1/2} (HaoChen et al.: the minimisers span exactly these);
* the population loss minus its minimum -sum_{i<=k} lambda_i^2 (the loss is
  ||A_bar - F~ F~^T||_F^2 - ||A_bar||_F^2 with F~ = D^{1/2} F);
* a linear probe of the clusters on f (half of the nodes to fit, half to test).

Run: ``python benchmarks/reproduce_haochen.py [--smoke]``.
"""

from __future__ import annotations

from typing import Any

import _repro_common as common
import numpy as np
import torch

import contrastive as cl
from contrastive import metrics
from contrastive.linear import sin_theta_distance

NAME = "haochen_spectral"


def augmentation_graph(
    clusters: int, per_cluster: int, across: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric weights (N, N) summing to 1, uniform(0.5, 1.5) within clusters and ``across`` times that
    between them; and the cluster of each node."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(clusters), per_cluster)
    n = labels.size
    raw = rng.uniform(0.5, 1.5, size=(n, n))
    raw = np.triu(raw) + np.triu(raw, 1).T
    weights = raw * np.where(labels[:, None] == labels[None, :], 1.0, across)
    return weights / weights.sum(), labels


def spectrum(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenvalues and eigenvectors (N, k) of the normalised adjacency D^{-1/2} A D^{-1/2}."""
    inv_sqrt = 1 / np.sqrt(weights.sum(axis=1))
    values, vectors = np.linalg.eigh(weights * inv_sqrt[:, None] * inv_sqrt[None, :])
    return values[::-1][:k], vectors[:, ::-1][:, :k]


def population_loss(table: np.ndarray, weights: np.ndarray) -> float:
    """The spectral contrastive loss in expectation over the graph: -2 E_pos[f.f'] + E_{x,x'}[(f.f')^2]."""
    marginal = weights.sum(axis=1)
    gram = table @ table.T
    return float(-2 * (weights * gram).sum() + (marginal[:, None] * marginal[None, :] * gram**2).sum())


def run_one(args: Any, seed: int) -> dict[str, Any]:
    """Train one free table on one graph; return the metrics along the steps."""
    weights, labels = augmentation_graph(args.clusters, args.per_cluster, args.across, seed)
    n, k = labels.size, args.k
    top_values, top_vectors = spectrum(weights, k)
    minimum = -float((np.clip(top_values, 0, None) ** 2).sum())
    sqrt_marginal = np.sqrt(weights.sum(axis=1))
    g = common.seed_all(seed)
    table = torch.nn.Parameter(torch.randn(n, k, generator=g, dtype=torch.float64) * 0.1)
    loss = cl.get_loss("spectral")
    optimizer = torch.optim.Adam([table], lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    pair_probs = torch.as_tensor(weights.ravel())
    y = torch.as_tensor(labels)
    fit, held = torch.arange(0, n, 2), torch.arange(1, n, 2)
    curve = []
    for step in range(args.steps + 1):
        if step in args.checkpoints:
            f = table.detach().numpy()
            curve.append(
                {
                    "step": step,
                    "subspace_distance": sin_theta_distance(top_vectors, sqrt_marginal[:, None] * f),
                    "loss_minus_minimum": population_loss(f, weights) - minimum,
                    "probe_accuracy": metrics.linear_probe_accuracy(
                        table.detach()[fit], y[fit], table.detach()[held], y[held]
                    ),
                }
            )
        if step == args.steps:
            break
        pairs = torch.multinomial(pair_probs, args.batch_size, replacement=True, generator=g)
        value = loss(table[pairs // n], table[pairs % n])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        schedule.step()
    return {"eigenvalues": [float(v) for v in spectrum(weights, k + 1)[0]], "curve": curve}


def run(args: Any) -> dict[str, Any]:
    """Every seed (a new graph and initialisation each)."""
    runs = [run_one(args, seed) for seed in range(args.seeds)]
    curve = []
    for recs in zip(*(r["curve"] for r in runs), strict=True):
        curve.append(
            {"step": recs[0]["step"]}
            | {m: common.mean_std([r[m] for r in recs]) for m in recs[0] if m != "step"}
        )
        print(
            {m: round(v["mean"], 4) if isinstance(v, dict) else v for m, v in curve[-1].items()}, flush=True
        )
    return {"curve": curve, "eigenvalues": [r["eigenvalues"] for r in runs]}


def markdown(report: dict[str, Any]) -> str:
    """Final values beside the theorem's prediction."""
    cfg, res = report["config"], report["results"]
    first, last = res["curve"][0], res["curve"][-1]
    gap = np.mean([ev[cfg["k"] - 1] - ev[cfg["k"]] for ev in res["eigenvalues"]])
    lines = [
        "# HaoChen et al. reproduction: the spectral contrastive loss recovers the augmentation graph's "
        "eigenvectors",
        "",
        f"Augmentation graph of {cfg['clusters'] * cfg['per_cluster']} nodes in {cfg['clusters']} clusters "
        f"(cross-cluster weights {cfg['across']:g} times the within-cluster ones; mean eigengap "
        f"λ_k − λ_(k+1) = {gap:.3f}), representation dimension k = {cfg['k']}, free table trained by Adam "
        f"(lr {cfg['lr']}, cosine) on {cfg['batch_size']} sampled positive pairs per step for {cfg['steps']} "
        f"steps; mean ± std over {cfg['seeds']} graphs.",
        "",
    ]
    lines += common.comparison_table(
        [
            (
                "sin-theta distance to top-k eigenvectors",
                "0 at the minimiser",
                f"{common.fmt(last['subspace_distance'], 4)} "
                f"(initialisation {common.fmt(first['subspace_distance'])})",
            ),
            ("population loss − minimum", "0 at the minimiser", common.fmt(last["loss_minus_minimum"], 5)),
            (
                "linear probe of the clusters (held-out nodes)",
                "small error (their bound: graph well separated)",
                common.fmt(last["probe_accuracy"]),
            ),
        ]
    )
    lines += [common.machine_line(report["machine"]), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> common.Figure:
    """Subspace distance, loss gap and probe accuracy against the step."""
    fig, axes = common.subplots(3)
    curve = report["results"]["curve"]
    steps = [max(r["step"], 1) for r in curve]
    for ax, (metric, title, log) in zip(
        axes,
        [
            ("subspace_distance", "sin-theta distance to top-k eigenvectors", True),
            ("loss_minus_minimum", "population loss − minimum", True),
            ("probe_accuracy", "linear probe accuracy (held-out nodes)", False),
        ],
        strict=True,
    ):
        mean = np.array([r[metric]["mean"] for r in curve])
        std = np.array([r[metric]["std"] for r in curve])
        ax.errorbar(steps, np.maximum(mean, 1e-8), yerr=std, marker="o", capsize=3)
        ax.set(xscale="log", yscale="log" if log else "linear", xlabel="step", title=title)
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run and write the results."""
    p = common.parser(__doc__)
    p.add_argument("--clusters", type=int, default=4)
    p.add_argument("--per-cluster", type=int, default=25)
    p.add_argument("--across", type=float, default=0.05)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=512)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.k = args.clusters
    if args.smoke:
        args.steps, args.seeds, args.per_cluster = 20, args.seeds or 1, 6
    else:
        args.steps, args.seeds = 4000, args.seeds or 3
    args.checkpoints = sorted({0, *(int(round(args.steps ** (i / 10))) for i in range(11))})
    report: dict[str, Any] = {
        "experiment": "HaoChen et al. (NeurIPS 2021): spectral contrastive loss on an augmentation graph",
        "config": {
            "clusters": args.clusters,
            "per_cluster": args.per_cluster,
            "across": args.across,
            "k": args.k,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "steps": args.steps,
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
