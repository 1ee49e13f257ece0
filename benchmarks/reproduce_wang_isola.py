"""Reproduce Wang & Isola (ICML 2020): uniformity's closed form, and alignment/uniformity vs probe accuracy.

(a) For points drawn uniformly on the sphere S^{d-1}, ``metrics.uniformity`` (t = 2)
    must equal its closed form: with u = <x, y> for independent uniform x, y and
    kappa = 2t, E exp(-t ||x - y||^2) = exp(-2t) E exp(kappa u) and
    E exp(kappa u) = Gamma(d/2) (2/kappa)^nu I_nu(kappa), nu = d/2 - 1
    (d = 2: -4 + ln I_0(4) = -1.575; d = 3: ln((1 - e^-8) / 8)).
(b) Encoders trained on the trainer's data (sklearn digits, the trainer's MLP and
    augmentation) with NT-Xent at several temperatures and training lengths, and with
    the ``align_uniform`` loss (L_align + L_unif, the example plugin's, when installed):
    the rank correlation of held-out alignment / uniformity with linear-probe accuracy.

Run: ``python benchmarks/reproduce_wang_isola.py [--smoke]``.
"""

from __future__ import annotations

import math
from typing import Any

import _repro_common as common
import torch

import contrastive as cl
from contrastive import metrics

NAME = "wang_isola"
T = 2.0  # the potential's scale in L_uniform, as in the paper


def log_bessel_i(nu: float, x: float, terms: int = 120) -> float:
    """ln I_nu(x) from its power series sum_k (x/2)^(2k+nu) / (k! Gamma(k+nu+1)), summed in log space."""
    logs = [
        (2 * k + nu) * math.log(x / 2) - math.lgamma(k + 1) - math.lgamma(k + nu + 1) for k in range(terms)
    ]
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs))


def uniformity_closed_form(d: int, t: float = T) -> float:
    """log E exp(-t ||x - y||^2) for x, y independent and uniform on S^{d-1}."""
    kappa, nu = 2 * t, d / 2 - 1
    return -2 * t + math.lgamma(d / 2) + nu * math.log(2 / kappa) + log_bessel_i(nu, kappa)


def part_a(dims: list[int], n: int, seeds: int) -> dict[str, Any]:
    """``metrics.uniformity`` of n uniform points on S^{d-1} against the closed form, per dimension."""
    out = {}
    for d in dims:
        values = []
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            z = torch.randn(
                n, d, generator=g, dtype=torch.float64
            )  # normalised inside: uniform on the sphere
            values.append(metrics.uniformity(z, t=T).item())
        out[str(d)] = {"closed_form": uniformity_closed_form(d), "measured": common.mean_std(values)}
    return out


def part_b(args: Any) -> dict[str, Any]:
    """Train NT-Xent at each temperature (and align_uniform) and record metrics at each checkpoint."""
    runs: list[dict[str, Any]] = []
    losses: list[tuple[str, dict[str, Any], torch.nn.Module]] = [
        (f"nt_xent τ={tau:g}", {"temperature": tau}, cl.get_loss("nt_xent", temperature=tau))
        for tau in args.temperatures
    ]
    has_align_uniform = "align_uniform" in cl.list_losses()
    if has_align_uniform:
        losses.append(("align_uniform", {"weight": 1.0}, cl.get_loss("align_uniform", weight=1.0)))
    for label, options, loss in losses:
        for seed in range(args.seeds):
            records = common.train_digits(
                loss, seed=seed, batch_size=args.batch_size, steps=max(args.checkpoints),
                checkpoints=args.checkpoints,
            )  # fmt: skip
            for rec in records:
                runs.append({"loss": label, "options": options, "seed": seed, **rec})
            print(label, seed, [(r["step"], round(r["accuracy"], 3)) for r in records], flush=True)
    acc = [r["accuracy"] for r in runs]
    corr = {key: common.spearman([r[key] for r in runs], acc) for key in ("alignment", "uniformity")}
    corr["alignment + uniformity"] = common.spearman([r["alignment"] + r["uniformity"] for r in runs], acc)
    knn = [r["knn_accuracy"] for r in runs]
    corr_knn = {key: common.spearman([r[key] for r in runs], knn) for key in ("alignment", "uniformity")}
    return {
        "align_uniform_installed": has_align_uniform,
        "runs": runs,
        "spearman_with_accuracy": corr,
        "spearman_with_knn_accuracy": corr_knn,
    }


def final_accuracy(runs: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Accuracy at the last checkpoint of the runs of one loss, over seeds."""
    last = max(r["step"] for r in runs)
    return common.mean_std([r["accuracy"] for r in runs if r["loss"] == label and r["step"] == last])


def markdown(report: dict[str, Any]) -> str:
    """The closed-form table, the correlation table and the paper's findings beside ours."""
    a, b, cfg = report["closed_form"], report["training"], report["config"]
    lines = [
        "# Wang & Isola reproduction: uniformity's closed form, alignment/uniformity vs accuracy",
        "",
        f"(a) `metrics.uniformity` (t = 2) of {cfg['n_sphere']} points uniform on the sphere, "
        f"mean ± std over {cfg['seeds_sphere']} draws, against the closed form.",
        "",
        "| d | closed form | measured | difference |",
        "|---:|---:|---:|---:|",
    ]
    for d, rec in a.items():
        diff = rec["measured"]["mean"] - rec["closed_form"]
        lines.append(f"| {d} | {rec['closed_form']:.4f} | {common.fmt(rec['measured'], 4)} | {diff:+.4f} |")
    corr = b["spearman_with_accuracy"]
    labels = sorted({r["loss"] for r in b["runs"]}, key=lambda s: (s == "align_uniform", s))
    finals = {lab: final_accuracy(b["runs"], lab) for lab in labels}
    best_nt = max((v["mean"], k) for k, v in finals.items() if k.startswith("nt_xent"))
    au = finals.get("align_uniform")
    lines += [
        "",
        f"(b) {len(b['runs'])} encoders (losses × {cfg['seeds']} seeds × checkpoints at steps "
        f"{cfg['checkpoints']}, batch {cfg['batch_size']}) on sklearn digits with the trainer's MLP "
        "and augmentation; alignment and uniformity of held-out projections, linear probe on the "
        "encoder features. Spearman correlation with probe accuracy "
        "(negative: lower metric, higher accuracy):",
        "",
    ]
    lines += common.comparison_table(
        [
            ("corr(alignment, accuracy)", "negative (their correlation figure)", f"{corr['alignment']:+.2f}"),
            ("corr(uniformity, accuracy)", "negative", f"{corr['uniformity']:+.2f}"),
            ("corr(alignment + uniformity, accuracy)", "negative", f"{corr['alignment + uniformity']:+.2f}"),
            (
                "L_align + L_unif as the loss",
                "comparable or better than contrastive loss",
                f"{common.fmt(au)} vs best NT-Xent {best_nt[0]:.3f} ({best_nt[1]})"
                if au
                else "plugin not installed",
            ),
        ]
    )
    knn = b["spearman_with_knn_accuracy"]
    lines += [
        f"With the kNN probe instead: corr(alignment, kNN accuracy) {knn['alignment']:+.2f}, "
        f"corr(uniformity, kNN accuracy) {knn['uniformity']:+.2f}.",
        "",
        "| loss | probe accuracy at the last step |",
        "|---|---:|",
    ]
    lines += [f"| {lab} | {common.fmt(v)} |" for lab, v in finals.items()]
    lines += ["", common.machine_line(report["machine"]), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> common.Figure:
    """Closed form vs measured uniformity per d; accuracy against alignment and uniformity."""
    fig, (ax0, ax1, ax2) = common.subplots(3)
    a = report["closed_form"]
    dims = [int(d) for d in a]
    ax0.plot(dims, [a[str(d)]["closed_form"] for d in dims], "k-", label="closed form")
    ax0.plot(dims, [a[str(d)]["measured"]["mean"] for d in dims], "o", label="metrics.uniformity")
    ax0.set(xscale="log", xlabel="d", ylabel="uniformity of uniform points", title="(a) closed form")
    ax0.legend()
    runs = report["training"]["runs"]
    for label in sorted({r["loss"] for r in runs}):
        rs = [r for r in runs if r["loss"] == label]
        for ax, key in ((ax1, "alignment"), (ax2, "uniformity")):
            ax.scatter([r[key] for r in rs], [r["accuracy"] for r in rs], label=label, s=18)
    ax1.set(xlabel="alignment (lower is better)", ylabel="linear probe accuracy", title="(b) digits encoders")
    ax2.set(xlabel="uniformity (lower is better)", ylabel="linear probe accuracy")
    ax2.legend(fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both parts and write the results."""
    p = common.parser(__doc__)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        dims, n, seeds_sphere = [2, 3], 300, 1
        args.temperatures, args.checkpoints, args.batch_size = [0.2], [2, 4], 64
        args.seeds = args.seeds or 1
    else:
        dims, n, seeds_sphere = [2, 3, 4, 8, 16, 64, 256], 4000, 3
        args.temperatures, args.checkpoints, args.batch_size = [0.05, 0.1, 0.2, 0.5, 1.0], [20, 100, 400], 256
        args.seeds = args.seeds or 2
    report: dict[str, Any] = {
        "experiment": "Wang & Isola (ICML 2020): alignment and uniformity on the hypersphere",
        "config": {
            "t": T,
            "dims": dims,
            "n_sphere": n,
            "seeds_sphere": seeds_sphere,
            "temperatures": args.temperatures,
            "checkpoints": args.checkpoints,
            "batch_size": args.batch_size,
            "seeds": args.seeds,
            "smoke": args.smoke,
        },  # fmt: skip
        "machine": common.machine(),
    }
    report["closed_form"] = part_a(dims, n, seeds_sphere)
    report["training"] = part_b(args)
    common.write(NAME, report, markdown(report), plot, args.out)
    return report


if __name__ == "__main__":
    main()
