"""Plot ``results/losses.json`` (time per family and peak memory against 2N) to ``results/losses.png``."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    """Read the loss benchmark's JSON and write one log-log panel per loss family plus one for memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads((RESULTS / "losses.json").read_text())
    timing = [r for r in data["timing"] if "seconds" in r]
    memory = [r for r in data["memory"] if "peak_bytes" in r]
    families = list(dict.fromkeys(r["family"] for r in timing))
    fig, axes = plt.subplots(1, len(families) + 1, figsize=(4 * (len(families) + 1), 3.8))
    for ax, family in zip(axes, families, strict=False):
        rows = [r for r in timing if r["family"] == family]
        for name in dict.fromkeys(r["implementation"] for r in rows):
            mine = sorted((r for r in rows if r["implementation"] == name), key=lambda r: r["size"])
            ax.plot([r["size"] for r in mine], [r["seconds"] for r in mine], marker="o", label=name)
        ax.set_title(f"{family}: forward + backward")
        ax.set_ylabel("seconds")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for key in dict.fromkeys((r["family"], r["implementation"]) for r in memory):
        mine = sorted((r for r in memory if (r["family"], r["implementation"]) == key), key=lambda r: r["size"])
        ax.plot([r["size"] for r in mine], [max(r["peak_bytes"], 1) / 2**20 for r in mine], marker="o",
                label=" ".join(key))
    ax.set_title("peak memory above the inputs")
    ax.set_ylabel("MiB")
    ax.legend(fontsize=6)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("2N (embeddings, D = 128)")
        ax.grid(True, which="major", alpha=0.3)
    info = data["machine"]
    fig.suptitle(f"{info['cpu']} ({info['cores']} cores, {info['threads']} threads), commit {info['commit'][:7]}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "losses.png", dpi=100)
    print(f"wrote {RESULTS / 'losses.png'}")


if __name__ == "__main__":
    main()
