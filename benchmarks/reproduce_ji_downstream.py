"""Reproduce Ji et al. (arXiv:2110.02473), downstream: regression on the learned representation vs on PCA's.

Spiked covariance data x = U z + xi (d = 50, r = 3, heteroskedastic noise as in
``reproduce_ji.py``) and a target that depends on the signal subspace only:
y = <theta, U^T x> + eps, theta a random unit vector, eps ~ N(0, sigma_y^2). Each method
learns an r-dimensional subspace from n unlabelled samples; an ordinary least-squares
predictor (with intercept) on the projection of x onto that subspace is fitted on m
labelled samples and scored on a large test set. Reported: the excess test risk
MSE - sigma_y^2 (the oracle, U itself, has about r/m of it from fitting alone).

Methods: ``cl_closed_form`` (masked contrastive learning, p = 0.5, complementary),
``pca``, ``linear_autoencoder`` (from ``reproduce_ji.py``) and ``oracle`` (the true U).

Run: ``python benchmarks/reproduce_ji_downstream.py [--smoke]``.
"""

from __future__ import annotations

from typing import Any

import _repro_common as common
import numpy as np
import torch
from reproduce_ji import METHODS

from contrastive.linear import spiked_covariance

NAME = "ji_downstream"
D, R, NOISE_STD, NOISE_RATIO, TARGET_NOISE = 50, 3, 2.0, 10.0, 0.5


def excess_risk(basis: np.ndarray, x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray) -> float:  # fmt: skip
    """Test MSE of least squares (with intercept) on ``x @ basis``, minus the target's noise variance."""

    def design(x: np.ndarray) -> np.ndarray:
        return np.hstack([x @ basis, np.ones((x.shape[0], 1))])

    coef, *_ = np.linalg.lstsq(design(x_fit), y_fit, rcond=None)
    return float(np.mean((design(x_test) @ coef - y_test) ** 2) - TARGET_NOISE**2)


def run(args: Any) -> dict[str, Any]:
    """For each n and seed: learn every subspace on n samples, fit on m, score on the test set."""
    results: dict[str, dict[str, list[float]]] = {name: {} for name in args.methods}
    for n in args.ns:
        for seed in range(args.seeds):
            x, u = spiked_covariance(
                n + args.m + args.n_test,
                D,
                R,
                noise_std=NOISE_STD,
                noise_ratio=NOISE_RATIO,
                random_state=seed,
            )
            rng = np.random.default_rng(10_000 + seed)
            theta = rng.standard_normal(R)
            y = x @ u @ (theta / np.linalg.norm(theta)) + TARGET_NOISE * rng.standard_normal(x.shape[0])
            unlabelled, fit, test = np.split(np.arange(x.shape[0]), [n, n + args.m])
            for name in args.methods:
                basis = u if name == "oracle" else METHODS[name](x[unlabelled], R, seed)
                risk = excess_risk(basis, x[fit], y[fit], x[test], y[test])
                results[name].setdefault(str(n), []).append(risk)
        print(
            f"n={n:>6} " + "  ".join(f"{k}={np.mean(v[str(n)]):.4f}" for k, v in results.items()), flush=True
        )
    return {name: {n: common.mean_std(v) for n, v in per_n.items()} for name, per_n in results.items()}


def markdown(report: dict[str, Any]) -> str:
    """The excess risk per n and method, and the paper's claim beside ours."""
    cfg, res = report["config"], report["results"]
    methods, ns = list(res), cfg["ns"]
    lines = [
        "# Ji et al. reproduction: downstream regression on the learned representation",
        "",
        f"Spiked covariance model, d={D}, r={R}, heteroskedastic noise std {NOISE_STD} down to "
        f"{NOISE_STD / NOISE_RATIO:g}; target y = <θ, Uᵀx> + ε with ε std {TARGET_NOISE}; least squares on "
        f"the r-dimensional projection fitted on m={cfg['m']} labelled samples, scored on {cfg['n_test']}; "
        f"excess test risk MSE − σ², mean ± std over {cfg['seeds']} seeds. Lower is better.",
        "",
        "| n | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for n in ns:
        lines.append(f"| {n} | " + " | ".join(common.fmt(res[m][str(n)], 4) for m in methods) + " |")
    first, last = str(ns[0]), str(ns[-1])
    lines.append("")
    rows = [
        (
            f"{m}: excess risk, n={first} → n={last}",
            "→ oracle as n grows" if m.startswith("cl") else "stays above the oracle (biased subspace)",
            f"{res[m][first]['mean']:.4f} → {res[m][last]['mean']:.4f}",
        )
        for m in methods
        if m != "oracle"
    ]
    rows.append(("oracle (true U)", "r/m fitting error only", f"{res['oracle'][last]['mean']:.4f}"))
    lines += common.comparison_table(rows)
    lines += [common.machine_line(report["machine"]), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> common.Figure:
    """Excess risk against n (log-log), one line per method."""
    fig, (ax,) = common.subplots(1, width=6, height=4)
    ns = report["config"]["ns"]
    for name, per_n in report["results"].items():
        mean = np.array([per_n[str(n)]["mean"] for n in ns])
        std = np.array([per_n[str(n)]["std"] for n in ns])
        ax.errorbar(ns, np.maximum(mean, 1e-5), yerr=std, marker="o", capsize=3, label=name)
    ax.set(xscale="log", yscale="log", xlabel="unlabelled sample size n", ylabel="excess test risk")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep and write the results."""
    p = common.parser(__doc__)
    p.add_argument("--m", type=int, default=500, help="labelled samples for the downstream predictor")
    p.add_argument("--n-test", type=int, default=5000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.methods = ["cl_closed_form", "pca", "linear_autoencoder", "oracle"]
    if args.smoke:
        args.ns, args.seeds, args.m, args.n_test = [200, 400], args.seeds or 1, 100, 200
        args.methods.remove("linear_autoencoder")
    else:
        args.ns, args.seeds = [250, 1000, 4000, 16000], args.seeds or 5
    report: dict[str, Any] = {
        "experiment": "Ji et al. (arXiv:2110.02473): downstream regression on contrastive vs PCA features",
        "config": {
            "d": D,
            "r": R,
            "noise_std": NOISE_STD,
            "noise_ratio": NOISE_RATIO,
            "target_noise": TARGET_NOISE,
            "ns": args.ns,
            "m": args.m,
            "n_test": args.n_test,
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
