"""Reproduce Robinson et al. (ICLR 2021) and Chuang et al. (NeurIPS 2020): hard and debiased negatives.

A latent-class mixture in which hard negatives matter: K = 10 equally likely classes
(so the true class prior is tau+ = 0.1) in 5 super-classes of 2 "sibling" classes. The
8-dimensional signal of a sample is its super-class centre (norm 3) plus its class
offset (norm 1.2) plus N(0, 0.5^2) noise, so siblings are close: each other's hard
negatives. 24 nuisance coordinates N(0, 1) are appended and everything is rotated by
a fixed random orthogonal matrix. A view adds N(0, 0.3^2) noise along the signal and
N(0, 2^2) along the nuisance directions. An MLP encoder (32 -> 128 -> 16) is trained
with ``nt_xent`` at temperature 0.5 (Robinson et al.'s) and

* the ``hard`` sampler, beta in {0, 0.5, 1, 2, 6} at tau+ = 0.1 (Robinson et al.);
* the ``debiased`` sampler (tau+ = 0.05) and ``uniform`` (tau+ = 0) (Chuang et al.);
  tau+ = 0.1 is the beta = 0 run of the hard sampler, which equals ``debiased``.

Accuracy: a linear probe on the encoder output of clean samples, fitted on 20 labelled
samples per class, scored on 2,000 held-out samples.

Run: ``python benchmarks/reproduce_robinson.py [--smoke]``.
"""

from __future__ import annotations

from typing import Any

import _repro_common as common
import numpy as np
import torch

import contrastive as cl
from contrastive import metrics

NAME = "robinson_hard_negatives"
SUPER, SIBLINGS, SIGNAL, NUISANCE, EMBED = 5, 2, 8, 24, 16
PAPER_BETA = {0.0: 84.26, 0.5: 86.38, 1.0: 87.44, 2.0: 87.09, 6.0: 83.09}  # STL-10, tau+ = 0.1
PAPER_TAU_PLUS = {0.0: 80.15, 0.05: 81.85, 0.1: 84.26}  # STL-10, Chuang et al.


class Mixture:
    """The latent-class mixture: sample clean inputs with labels, and draw augmented views."""

    def __init__(self, seed: int) -> None:
        """Draw the centres, offsets and the rotation from ``seed``."""
        g = torch.Generator().manual_seed(seed)

        def scaled(rows: int, norm: float) -> torch.Tensor:
            v = torch.randn(rows, SIGNAL, generator=g)
            return norm * v / v.norm(dim=1, keepdim=True)

        self.means = scaled(SUPER, 3.0).repeat_interleave(SIBLINGS, dim=0) + scaled(SUPER * SIBLINGS, 1.2)
        self.rotation = torch.linalg.qr(torch.randn(SIGNAL + NUISANCE, SIGNAL + NUISANCE, generator=g))[0]
        self.g = g

    @property
    def classes(self) -> int:
        """K, the number of classes."""
        return self.means.shape[0]

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` samples: (signal, nuisance) in latent coordinates and the labels."""
        y = torch.randint(0, self.classes, (n,), generator=self.g)
        signal = self.means[y] + 0.5 * torch.randn(n, SIGNAL, generator=self.g)
        return signal, torch.randn(n, NUISANCE, generator=self.g), y

    def inputs(self, signal: torch.Tensor, nuisance: torch.Tensor, augment: bool) -> torch.Tensor:
        """The rotated inputs; with ``augment``, one random view."""
        if augment:
            signal = signal + 0.3 * torch.randn(signal.shape, generator=self.g)
            nuisance = nuisance + 2.0 * torch.randn(nuisance.shape, generator=self.g)
        return torch.cat([signal, nuisance], dim=1) @ self.rotation.T


def run_one(sampler: Any, args: Any, seed: int) -> float:
    """Train one encoder with ``nt_xent`` and ``sampler``; return the probe accuracy."""
    common.seed_all(seed)
    data = Mixture(seed)
    encoder = common.mlp(SIGNAL + NUISANCE, EMBED)
    loss = cl.get_loss("nt_xent", temperature=args.temperature, sampler=sampler)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=args.lr)
    for _ in range(args.steps):
        signal, nuisance, _ = data.sample(args.batch_size)
        views = [encoder(data.inputs(signal, nuisance, augment=True)) for _ in range(2)]
        value = loss(*views)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    fit_s, fit_u, fit_y = data.sample(args.probe_per_class * data.classes)
    test_s, test_u, test_y = data.sample(args.n_test)
    with torch.no_grad():
        fit_z, test_z = encoder(data.inputs(fit_s, fit_u, False)), encoder(data.inputs(test_s, test_u, False))
    return metrics.linear_probe_accuracy(fit_z, fit_y, test_z, test_y)


def run(args: Any) -> dict[str, Any]:
    """The beta sweep at tau+ = 0.1 and the tau+ sweep at beta = 0, every seed."""
    settings: dict[str, Any] = {
        f"beta={b:g}": cl.get_sampler("hard", beta=b, tau_plus=0.1) for b in args.betas
    }
    settings["tau_plus=0"] = cl.get_sampler("uniform")
    settings["tau_plus=0.05"] = cl.get_sampler("debiased", tau_plus=0.05)
    results = {}
    for name, sampler in settings.items():
        results[name] = common.mean_std([100 * run_one(sampler, args, seed) for seed in range(args.seeds)])
        print(name, common.fmt(results[name], 2), flush=True)
    results["tau_plus=0.1"] = results["beta=0"]
    return results


def markdown(report: dict[str, Any]) -> str:
    """Both sweeps, the papers' STL-10 accuracies beside ours."""
    cfg, res = report["config"], report["results"]
    lines = [
        "# Robinson et al. / Chuang et al. reproduction: hard and debiased negatives",
        "",
        f"Latent-class mixture (10 classes in 5 pairs of close sibling classes, {SIGNAL} signal and "
        f"{NUISANCE} nuisance dimensions), MLP encoder, `nt_xent` at temperature {cfg['temperature']}, "
        f"Adam (lr {cfg['lr']}) for {cfg['steps']} steps of {cfg['batch_size']} fresh samples; linear probe "
        f"accuracy (%) from {cfg['probe_per_class']} labelled samples per class, mean ± std over "
        f"{cfg['seeds']} seeds. The papers' numbers are STL-10 linear-readout accuracies of image encoders: "
        "compare the shape, not the level.",
        "",
        "| β (τ⁺ = 0.1) | paper (STL-10) | ours |",
        "|---:|---:|---:|",
    ]
    for beta in cfg["betas"]:
        lines.append(f"| {beta:g} | {PAPER_BETA[beta]:.2f} | {common.fmt(res[f'beta={beta:g}'], 2)} |")
    lines += ["", "| τ⁺ (β = 0) | paper (STL-10) | ours |", "|---:|---:|---:|"]
    for tp in (0.0, 0.05, 0.1):
        lines.append(f"| {tp:g} | {PAPER_TAU_PLUS[tp]:.2f} | {common.fmt(res[f'tau_plus={tp:g}'], 2)} |")
    means = [res[f"beta={b:g}"]["mean"] for b in cfg["betas"]]
    peak = int(np.argmax(means))
    inverted_u = 0 < peak < len(means) - 1
    lines += [
        "",
        f"Shape of our β sweep: peak at β = {cfg['betas'][peak]:g}; "
        + (
            "an inverted U, as in the paper."
            if inverted_u
            else "not an inverted U (the paper's peaks at β = 1)."
        ),
        "",
        common.machine_line(report["machine"]),
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> common.Figure:
    """Accuracy against beta and against tau+, ours and the paper's (separate axes: different levels)."""
    fig, (ax0, ax1) = common.subplots(2)
    cfg, res = report["config"], report["results"]
    for ax, keys, paper, xlabel in (
        (ax0, [f"beta={b:g}" for b in cfg["betas"]], PAPER_BETA, "β (τ⁺ = 0.1)"),
        (ax1, ["tau_plus=0", "tau_plus=0.05", "tau_plus=0.1"], PAPER_TAU_PLUS, "τ⁺ (β = 0)"),
    ):
        xs = [float(k.split("=")[1]) for k in keys]
        ax.errorbar(xs, [res[k]["mean"] for k in keys], yerr=[res[k]["std"] for k in keys], marker="o",
                    capsize=3, label="ours (mixture)")  # fmt: skip
        twin = ax.twinx()
        twin.plot(list(paper), list(paper.values()), "s--", color="C1", label="paper (STL-10)")
        ax.set(xlabel=xlabel, ylabel="our probe accuracy (%)")
        twin.set_ylabel("paper's accuracy (%)", color="C1")
        ax.legend(loc="lower left", fontsize=8)
        twin.legend(loc="lower right", fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both sweeps and write the results."""
    p = common.parser(__doc__)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.betas = list(PAPER_BETA)
    args.n_test, args.probe_per_class = 2000, 20
    if args.smoke:
        args.steps, args.seeds, args.batch_size, args.n_test = 3, args.seeds or 1, 32, 200
    else:
        args.steps, args.seeds = 800, args.seeds or 3
    report: dict[str, Any] = {
        "experiment": "Robinson et al. (ICLR 2021) hard negatives; Chuang et al. (NeurIPS 2020) debiasing",
        "config": {
            "betas": args.betas,
            "temperature": args.temperature,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "probe_per_class": args.probe_per_class,
            "n_test": args.n_test,
            "seeds": args.seeds,
            "smoke": args.smoke,
        },  # fmt: skip
        "paper": {"beta_at_tau_plus_0.1": PAPER_BETA, "tau_plus_at_beta_0": PAPER_TAU_PLUS},
        "machine": common.machine(),
    }
    report["results"] = run(args)
    common.write(NAME, report, markdown(report), plot, args.out)
    return report


if __name__ == "__main__":
    main()
