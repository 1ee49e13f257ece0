"""Reproduce Ji et al. (arXiv:2110.02473): labels in supervised contrastive learning, in-domain vs transfer.

Spiked covariance data (d = 50, r = 4 signal directions, heteroskedastic noise) and two
tasks read off the signal coordinates s = U^T x: the *source* task, whose labels SupCon
sees, is the quadrant of (s_1, s_2); the *transfer* task is the quadrant of (s_3, s_4).
A linear encoder W (4 x d) is trained with the library's losses on random-mask views
(p = 0.5, complementary), embeddings normalised inside the losses:

* ``self-supervised``: ``nt_xent`` on batches of the n unlabelled samples;
* ``supcon``: ``supcon`` with the labels of the m labelled samples only;
* ``mix``: ``nt_xent`` on an unlabelled batch plus ``supcon`` on a labelled batch.

For m labelled samples growing, linear probes on Wx (fitted on a separate probe set,
scored on a test set) measure the source task (in-domain) and the transfer task. Ji et al.
show that labels improve the in-domain task but can harm transfer learning; the mix keeps
both.

Run: ``python benchmarks/reproduce_ji_supcon.py [--smoke]``.
"""

from __future__ import annotations

from typing import Any

import _repro_common as common
import numpy as np
import torch

import contrastive as cl
from contrastive import metrics
from contrastive.linear import spiked_covariance

NAME = "ji_supcon"
D, R, SIGNAL_STD, NOISE_STD = 50, 4, 2.0, 2.0
METHODS = ("self-supervised", "supcon", "mix")


def quadrant(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Class 0..3 from the signs of two coordinates."""
    return (a > 0).astype(np.int64) + 2 * (b > 0).astype(np.int64)


def train(method: str, x_u: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor, args: Any, seed: int
          ) -> torch.Tensor:  # fmt: skip
    """Train the linear encoder with one method; return its weight (R, D)."""
    g = common.seed_all(seed)
    encoder = torch.nn.Linear(D, R, bias=False)
    augment = cl.get_augmentation("random_mask", mask_prob=0.5, complementary=True)
    nt_xent = cl.get_loss("nt_xent", temperature=args.temperature)
    supcon = cl.get_loss("supcon", temperature=args.temperature)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=args.lr)

    def batch(
        x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        idx = torch.randperm(x.shape[0], generator=g)[: args.batch_size]
        views = [encoder(v) for v in augment.views(x[idx], n=2, generator=g)]
        return views, (None if y is None else y[idx])

    for _ in range(args.steps):
        value = torch.zeros(())
        if method in ("self-supervised", "mix"):
            views, _ = batch(x_u)
            value = value + nt_xent(*views)
        if method in ("supcon", "mix"):
            views, labels = batch(x_l, y_l)
            value = value + supcon(*views, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return encoder.weight.detach()


def run(args: Any) -> dict[str, Any]:
    """Every seed, method and labelled count: train, then probe the source and the transfer task."""
    raw: dict[str, dict[str, dict[str, list[float]]]] = {
        task: {m: {} for m in METHODS} for task in ("in_domain", "transfer")
    }
    for seed in range(args.seeds):
        total = args.n + max(args.ms) + 2 * args.n_probe
        x, u = spiked_covariance(total, D, R, signal_std=SIGNAL_STD, noise_std=NOISE_STD, random_state=seed)
        s = x @ u
        tasks = {"in_domain": quadrant(s[:, 0], s[:, 1]), "transfer": quadrant(s[:, 2], s[:, 3])}
        xt = torch.as_tensor(x, dtype=torch.float32)
        y = {k: torch.as_tensor(v) for k, v in tasks.items()}
        unl, lab, fit, test = np.split(np.arange(total), np.cumsum([args.n, max(args.ms), args.n_probe]))
        self_weight = train("self-supervised", xt[unl], xt[:0], y["in_domain"][:0], args, seed)
        for m in args.ms:
            labelled = torch.as_tensor(lab[:m])
            for method in METHODS:
                weight = self_weight if method == "self-supervised" else train(
                    method, xt[unl], xt[labelled], y["in_domain"][labelled], args, seed
                )  # fmt: skip
                feats = xt @ weight.T
                for task, labels in y.items():
                    acc = metrics.linear_probe_accuracy(feats[fit], labels[fit], feats[test], labels[test])
                    raw[task][method].setdefault(str(m), []).append(acc)
            print(f"seed {seed} m={m:>5} " + "  ".join(
                f"{meth}: {raw['in_domain'][meth][str(m)][-1]:.3f}/{raw['transfer'][meth][str(m)][-1]:.3f}"
                for meth in METHODS
            ), flush=True)  # fmt: skip
    return {
        task: {meth: {m: common.mean_std(v) for m, v in per.items()} for meth, per in per_task.items()}
        for task, per_task in raw.items()
    }


def markdown(report: dict[str, Any]) -> str:
    """Both tasks per m and method, and the paper's finding beside ours."""
    cfg, res = report["config"], report["results"]
    ms = [str(m) for m in cfg["ms"]]
    lines = [
        "# Ji et al. reproduction: labelled data in supervised contrastive learning",
        "",
        f"Spiked covariance model, d={D}, r={R}, signal std {SIGNAL_STD}, heteroskedastic noise std "
        f"{NOISE_STD} down to {NOISE_STD / 10:g}; linear encoder to {R} dimensions trained by Adam (lr "
        f"{cfg['lr']}, {cfg['steps']} steps, batch {cfg['batch_size']}, temperature {cfg['temperature']}) on "
        f"random-mask views of n={cfg['n']} unlabelled and m labelled samples. Linear-probe accuracy "
        f"(4 classes, chance 0.25; probes fitted on {cfg['n_probe']} samples, scored on {cfg['n_probe']}), "
        f"mean ± std over {cfg['seeds']} seeds. In-domain: the labels SupCon sees; transfer: another task.",
        "",
        "| m | " + " | ".join(f"{meth} in-domain | {meth} transfer" for meth in METHODS) + " |",
        "|---:|" + "---:|" * (2 * len(METHODS)),
    ]
    for m in ms:
        cells = [common.fmt(res[t][meth][m]) for meth in METHODS for t in ("in_domain", "transfer")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lo, hi = ms[0], ms[-1]

    def change(task: str, meth: str) -> str:
        return f"{res[task][meth][lo]['mean']:.3f} → {res[task][meth][hi]['mean']:.3f}"

    lines.append("")

    def versus(task: str, meth: str) -> str:
        ours, ref = res[task][meth][hi]["mean"], res[task]["self-supervised"][hi]["mean"]
        return f"{ours:.3f} vs {ref:.3f} without labels"

    lines += common.comparison_table(
        [
            (f"SupCon in-domain, m={lo} → {hi}", "improves with labels", change("in_domain", "supcon")),
            (f"SupCon in-domain at m={hi}", "better than without labels", versus("in_domain", "supcon")),
            (f"SupCon transfer at m={hi}", "can be worse than without labels", versus("transfer", "supcon")),
            (f"mix in-domain at m={hi}", "better than without labels", versus("in_domain", "mix")),
            (f"mix transfer at m={hi}", "not stated (keeps the self-supervised term)",
             versus("transfer", "mix")),
        ]
    )  # fmt: skip
    lines += [common.machine_line(report["machine"]), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> common.Figure:
    """Accuracy against m for each method, in-domain and transfer."""
    fig, axes = common.subplots(2)
    ms = report["config"]["ms"]
    for ax, task in zip(axes, ("in_domain", "transfer"), strict=True):
        for meth in METHODS:
            per = report["results"][task][meth]
            mean = np.array([per[str(m)]["mean"] for m in ms])
            std = np.array([per[str(m)]["std"] for m in ms])
            ax.errorbar(ms, mean, yerr=std, marker="o", capsize=3, label=meth)
        ax.set(xscale="log", xlabel="labelled samples m", ylabel="linear probe accuracy",
               title=task.replace("_", "-") + " task")  # fmt: skip
    axes[0].legend()
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep and write the results."""
    p = common.parser(__doc__)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        args.n, args.ms, args.n_probe, args.steps, args.seeds = 200, [8, 32], 200, 5, args.seeds or 1
    else:
        args.n, args.ms, args.n_probe, args.steps = 4000, [16, 64, 256, 1024, 4096], 2000, 400
        args.seeds = args.seeds or 3
    report: dict[str, Any] = {
        "experiment": "Ji et al. (arXiv:2110.02473): labelled data in supervised contrastive learning",
        "config": {
            "d": D,
            "r": R,
            "signal_std": SIGNAL_STD,
            "noise_std": NOISE_STD,
            "n": args.n,
            "ms": args.ms,
            "n_probe": args.n_probe,
            "steps": args.steps,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "temperature": args.temperature,
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
