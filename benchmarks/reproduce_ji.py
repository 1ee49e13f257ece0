"""Reproduce Ji et al. (arXiv:2110.02473): masked contrastive learning vs PCA vs a linear autoencoder.

Data: the spiked covariance model x = U z + xi with heteroskedastic noise
(``contrastive.linear.spiked_covariance``). For each sample size n and seed,
every method estimates an r-dimensional subspace and we report its sin-theta
distance ||sin Theta(U_hat, U)||_F to the true U (0 is perfect, sqrt(r) is orthogonal).

Methods:
  * ``cl_closed_form``: LinearContrastive(solver="closed_form"), complementary masks, p = 0.5;
  * ``cl_sgd``: LinearContrastive(solver="sgd"): a linear encoder trained with the
    ``linear_spectral`` loss on fresh ``random_mask`` views;
  * ``pca``: top-r eigenvectors of the sample covariance;
  * ``linear_autoencoder``: x -> D E x trained by Adam on the squared reconstruction
    error of centred data; the subspace is the row space of the encoder E.

Writes ``ji_spiked.json`` and ``ji_spiked.md`` (and ``ji_spiked.png`` when matplotlib
is installed) into ``--out``. Run: ``python benchmarks/reproduce_ji.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from contrastive.linear import LinearContrastive, sin_theta_distance, spiked_covariance

Method = Callable[[np.ndarray, int, int], np.ndarray]  # (X, r, seed) -> basis (d, r)


def pca(x: np.ndarray, r: int, seed: int) -> np.ndarray:
    """Top-r eigenvectors of the sample covariance."""
    _, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    return vecs[:, ::-1][:, :r]


def cl_closed_form(x: np.ndarray, r: int, seed: int) -> np.ndarray:
    """Contrastive learning with complementary random masks, closed-form minimiser."""
    return LinearContrastive(r, mask_prob=0.5).fit(x).components_.T


def cl_sgd(x: np.ndarray, r: int, seed: int, steps: int = 1500) -> np.ndarray:
    """Contrastive learning with complementary random masks, trained by stochastic gradients."""
    batch = min(512, x.shape[0])
    epochs = max(1, math.ceil(steps / max(1, x.shape[0] // batch)))
    model = LinearContrastive(
        r, mask_prob=0.5, solver="sgd", batch_size=batch, max_iter=epochs, random_state=seed
    )
    return model.fit(x).components_.T


def linear_autoencoder(x: np.ndarray, r: int, seed: int, steps: int = 1500) -> np.ndarray:
    """Linear autoencoder x -> D E x on centred data, trained by Adam; returns the encoder row space."""
    g = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(x - x.mean(axis=0))
    data = data / data.square().mean().sqrt()
    n, d = data.shape
    enc = torch.nn.Parameter(torch.randn(r, d, generator=g, dtype=torch.float64) / math.sqrt(d))
    dec = torch.nn.Parameter(torch.randn(d, r, generator=g, dtype=torch.float64) / math.sqrt(r))
    opt = torch.optim.Adam([enc, dec], lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    batch = min(512, n)
    for _ in range(steps):
        xb = data[torch.randint(0, n, (batch,), generator=g)]
        loss = (xb - xb @ enc.T @ dec.T).square().sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return enc.detach().numpy().T


METHODS: dict[str, Method] = {
    "cl_closed_form": cl_closed_form,
    "cl_sgd": cl_sgd,
    "pca": pca,
    "linear_autoencoder": linear_autoencoder,
}


def machine() -> dict[str, object]:
    """Describe the machine, library versions and the git commit."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
            )
            return out.stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "commit": git("rev-parse", "HEAD") or "unknown (no commit yet)",
        "dirty": bool(git("status", "--porcelain")),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the sweep and return the results as a JSON-ready dict."""
    host = machine()  # the commit and tree state the run starts from
    results: dict[str, dict[str, list[float]]] = {name: {} for name in args.methods}
    seconds = {name: 0.0 for name in args.methods}
    for n in args.ns:
        for seed in range(args.seeds):
            x, u = spiked_covariance(
                n, args.d, args.r, signal_std=args.signal_std, noise_std=args.noise_std,
                noise=args.noise, noise_ratio=args.noise_ratio, random_state=seed,
            )  # fmt: skip
            for name in args.methods:
                start = time.perf_counter()
                basis = METHODS[name](x, args.r, seed)
                seconds[name] += time.perf_counter() - start
                results[name].setdefault(str(n), []).append(sin_theta_distance(u, basis))
        row = "  ".join(f"{name}={np.mean(results[name][str(n)]):.3f}" for name in args.methods)
        print(f"n={n:>6}  {row}", flush=True)
    return {
        "experiment": "Ji et al. (arXiv:2110.02473): subspace recovery under the spiked covariance model",
        "metric": "sin-theta distance ||sin Theta(U_hat, U)||_F (mean and std over seeds)",
        "config": {
            "d": args.d,
            "r": args.r,
            "signal_std": args.signal_std,
            "noise_std": args.noise_std,
            "noise": args.noise,
            "noise_ratio": args.noise_ratio,
            "ns": args.ns,
            "seeds": args.seeds,
            "mask_prob": 0.5,
            "complementary": True,
        },  # fmt: skip
        "machine": host,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "results": {
            name: {
                n: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for n, v in per_n.items()
            }
            for name, per_n in results.items()
        },
    }


def markdown(report: dict[str, object]) -> str:
    """Render the report as a markdown table."""
    cfg = report["config"]
    res = report["results"]
    mach = report["machine"]
    assert isinstance(cfg, dict) and isinstance(res, dict) and isinstance(mach, dict)
    methods = list(res)
    lines = [
        "# Ji et al. reproduction: sin-theta distance to the true signal subspace",
        "",
        f"Spiked covariance model, d={cfg['d']}, r={cfg['r']}, signal std {cfg['signal_std']}, "
        f"{cfg['noise']} noise std from {cfg['noise_std']} "
        f"down to {cfg['noise_std'] / cfg['noise_ratio']:g}; "
        f"random masking p={cfg['mask_prob']} (complementary); mean ± std over {cfg['seeds']} seeds. "
        f"Lower is better; sqrt(r) = {math.sqrt(cfg['r']):.3f} is an orthogonal subspace.",
        "",
        "| n | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for n in cfg["ns"]:
        cells = [f"{res[m][str(n)]['mean']:.3f} ± {res[m][str(n)]['std']:.3f}" for m in methods]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Machine: {mach['platform']}, {mach['cpu_count']} CPUs ({mach['torch_threads']} torch thread), "
        f"Python {mach['python']}, torch {mach['torch']}, numpy {mach['numpy']}; "
        f"commit {mach['commit']}{' (dirty tree)' if mach['dirty'] else ''}. "
        f"Seconds per method: {report['seconds']}.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, object], path: Path) -> bool:
    """Write a log-x plot of the sweep when matplotlib is available; return whether it was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cfg, res = report["config"], report["results"]
    assert isinstance(cfg, dict) and isinstance(res, dict)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, per_n in res.items():
        ns = cfg["ns"]
        mean = np.array([per_n[str(n)]["mean"] for n in ns])
        std = np.array([per_n[str(n)]["std"] for n in ns])
        ax.errorbar(ns, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("sample size n")
    ax.set_ylabel("sin-theta distance to true subspace")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the sweep and write JSON, markdown and (optionally) PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=50)
    parser.add_argument("--r", type=int, default=3)
    parser.add_argument("--signal-std", type=float, default=1.0)
    parser.add_argument("--noise-std", type=float, default=2.0)
    parser.add_argument("--noise", choices=["heteroskedastic", "homoskedastic"], default="heteroskedastic")
    parser.add_argument("--noise-ratio", type=float, default=10.0)
    parser.add_argument(
        "--ns",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[250, 500, 1000, 2000, 4000, 8000, 16000],
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="ji_spiked")
    parser.add_argument("--quick", action="store_true", help="3 sample sizes, 2 seeds (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ns, args.seeds = [500, 2000, 8000], 2
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    torch.set_num_threads(1)  # tiny problems: one thread is fastest and timings are stable
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(report))
    wrote_png = plot(report, args.out / f"{args.name}.png")
    print(markdown(report))
    print(
        f"wrote {args.out / args.name}.json/.md" + (" and .png" if wrote_png else " (no matplotlib: no PNG)")
    )


if __name__ == "__main__":
    main()
