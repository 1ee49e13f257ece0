"""Reproduce Graf et al. (ICML 2021): SupCon collapses each class onto a vertex of a regular simplex.

Free embeddings: every view of every sample is its own trainable vector (no encoder),
K balanced classes of m samples, two views each, dimension d >= K - 1, unit-normalised
inside the loss. Full-batch Adam on SupCon (with the labels) and, on identical data and
initialisation, on NT-Xent (no labels). Tracked over the steps:

* ``metrics.simplex_distance``: ||G - G*||_F / ||G*||_F for the Gram matrix of the
  normalised class means (0: a regular simplex);
* ``metrics.class_collapse``: mean squared distance to the class mean (0: collapse);
* SupCon's value minus its lower bound. With V views, N' = V K m anchors and m' = V m
  per class, the collapsed regular simplex gives every anchor
  log(m' - 1 + (N' - m') exp(-K / ((K - 1) tau))), which Graf et al. prove is the
  minimum for balanced classes when d >= K - 1.

Run: ``python benchmarks/reproduce_graf.py [--smoke]``.
"""

from __future__ import annotations

import math
from typing import Any

import _repro_common as common
import torch

import contrastive as cl
from contrastive import metrics

NAME = "graf_collapse"
VIEWS = 2


def supcon_lower_bound(k: int, m: int, temperature: float, views: int = VIEWS) -> float:
    """SupCon (mean over anchors, positives in the denominator) at class collapse onto a regular simplex."""
    per_class, total = views * m, views * k * m
    return math.log(per_class - 1 + (total - per_class) * math.exp(-k / ((k - 1) * temperature)))


def setting_name(k: int, d: int, temperature: float) -> str:
    """The label of one (K, d, temperature) setting."""
    return f"K={k}, d={d}, τ={temperature:g}"


def run_one(
    loss_name: str, k: int, m: int, d: int, temperature: float, args: Any, seed: int
) -> list[dict[str, float]]:
    """Optimise free embeddings with one loss; return the metrics at each checkpoint."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(m)
    views = torch.nn.Parameter(torch.randn(VIEWS, k * m, d, generator=g, dtype=torch.float64))
    supcon = cl.get_loss("supcon", temperature=temperature)
    loss = supcon if loss_name == "supcon" else cl.get_loss("nt_xent", temperature=temperature)
    optimizer = torch.optim.Adam([views], lr=args.lr)
    bound = supcon_lower_bound(k, m, temperature)
    marks = set(args.checkpoints)
    records = []
    for step in range(args.steps + 1):
        if step in marks:
            with torch.no_grad():
                z, y = views.reshape(-1, d), labels.repeat(VIEWS)
                records.append(
                    {
                        "step": step,
                        "simplex_distance": metrics.simplex_distance(z, y).item(),
                        "class_collapse": metrics.class_collapse(z, y).item(),
                        "supcon_minus_bound": supcon(*views, labels=labels).item() - bound,
                    }
                )
        if step == args.steps:
            break
        value = loss(*views, labels=labels) if loss_name == "supcon" else loss(*views)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return records


def run(args: Any) -> dict[str, Any]:
    """Every (K, d, temperature) setting, both losses, every seed."""
    results: dict[str, Any] = {}
    for k, d, tau in args.settings:
        key = setting_name(k, d, tau)
        results[key] = {}
        for loss_name in ("supcon", "nt_xent"):
            per_seed = [run_one(loss_name, k, args.m, d, tau, args, seed) for seed in range(args.seeds)]
            results[key][loss_name] = [
                {
                    "step": recs[0]["step"],
                    **{
                        metric: common.mean_std([r[metric] for r in recs])
                        for metric in ("simplex_distance", "class_collapse", "supcon_minus_bound")
                    },
                }
                for recs in zip(*per_seed, strict=True)
            ]
            last = results[key][loss_name][-1]
            print(
                key, loss_name, {m: round(v["mean"], 4) for m, v in last.items() if m != "step"}, flush=True
            )
    return results


def markdown(report: dict[str, Any]) -> str:
    """Final metrics beside the paper's prediction."""
    cfg, res = report["config"], report["results"]
    lines = [
        "# Graf et al. reproduction: class collapse of SupCon onto a regular simplex",
        "",
        f"Free unit-norm embeddings, {cfg['m']} samples per class, {VIEWS} views, "
        f"full-batch Adam (lr {cfg['lr']}) for {cfg['steps']} steps; mean ± std over "
        f"{cfg['seeds']} initialisations. Values at the last step:",
        "",
    ]
    rows = []
    for key, per_loss in res.items():
        sup, nt = per_loss["supcon"][-1], per_loss["nt_xent"][-1]
        rows += [
            (
                f"{key}: SupCon simplex distance",
                "0 (regular simplex)",
                common.fmt(sup["simplex_distance"], 4),
            ),
            (
                f"{key}: SupCon within-class spread",
                "0 (class collapse)",
                common.fmt(sup["class_collapse"], 4),
            ),
            (
                f"{key}: SupCon loss − lower bound",
                "0 (bound attained)",
                common.fmt(sup["supcon_minus_bound"], 4),
            ),
            (
                f"{key}: NT-Xent within-class spread",
                "> 0 (labels unused)",
                common.fmt(nt["class_collapse"], 4),
            ),
            (f"{key}: NT-Xent simplex distance", "not predicted", common.fmt(nt["simplex_distance"], 4)),
        ]
    lines += common.comparison_table(rows)
    lines += [common.machine_line(report["machine"]), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> common.Figure:
    """The three metrics against the step, SupCon solid and NT-Xent dashed, one colour per setting."""
    fig, axes = common.subplots(3)
    titles = {
        "simplex_distance": "simplex distance",
        "class_collapse": "within-class spread",
        "supcon_minus_bound": "SupCon loss − lower bound",
    }
    for c, (key, per_loss) in enumerate(report["results"].items()):
        for loss_name, style in (("supcon", "-"), ("nt_xent", "--")):
            recs = per_loss[loss_name]
            steps = [max(r["step"], 1) for r in recs]
            for ax, metric in zip(axes, titles, strict=True):
                values = [max(r[metric]["mean"], 1e-8) for r in recs]
                ax.plot(steps, values, style, color=f"C{c}", marker=".", label=f"{loss_name}, {key}")
    for ax, title in zip(axes, titles.values(), strict=True):
        ax.set(xscale="log", yscale="log", xlabel="step", title=title)
    axes[0].legend(fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep and write the results."""
    p = common.parser(__doc__)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        args.settings, args.m, args.steps, args.seeds = [(3, 2, 0.5)], 4, 20, args.seeds or 1
    else:
        args.settings = [(4, 3, 0.1), (4, 3, 0.5), (10, 9, 0.1), (10, 9, 0.5)]
        args.m, args.steps, args.seeds = 10, 2000, args.seeds or 2
    args.checkpoints = sorted({0, *(int(round(args.steps ** (i / 12))) for i in range(13))})
    report: dict[str, Any] = {
        "experiment": "Graf et al. (ICML 2021): class collapse under supervised contrastive learning",
        "config": {
            "settings": [list(s) for s in args.settings],
            "m": args.m,
            "views": VIEWS,
            "lr": args.lr,
            "steps": args.steps,
            "seeds": args.seeds,
            "smoke": args.smoke,
        },  # fmt: skip
        "machine": common.machine(),
        "lower_bounds": {
            setting_name(k, d, tau): supcon_lower_bound(k, args.m, tau) for k, d, tau in args.settings
        },
    }
    report["results"] = run(args)
    common.write(NAME, report, markdown(report), plot, args.out)
    return report


if __name__ == "__main__":
    main()
