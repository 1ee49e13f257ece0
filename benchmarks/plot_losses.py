"""Plot ``results/losses.json`` (time and peak memory against 2N) to ``results/losses.png``."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    """Read the loss benchmark's JSON and write a two-panel log-log plot beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads((RESULTS / "losses.json").read_text())
    rows = [r for r in data["results"] if "error" not in r]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in sorted({r["implementation"] for r in rows}, key=lambda n: (n != "ours", n)):
        mine = sorted((r for r in rows if r["implementation"] == name), key=lambda r: r["size"])
        sizes = [r["size"] for r in mine]
        ax_time.plot(sizes, [r["seconds"] for r in mine], marker="o", label=name)
        ax_mem.plot(sizes, [max(r["peak_bytes"], 1) / 2**20 for r in mine], marker="o", label=name)
    for ax, label in ((ax_time, "forward + backward (s)"), (ax_mem, "peak memory above inputs (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("2N (embeddings, D = 128)")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    ax_mem.legend()
    fig.suptitle(f"NT-Xent on {data['machine']['cpu']} ({data['machine']['cores']} cores), commit "
                 f"{data['machine']['commit'][:7]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "losses.png", dpi=110)
    print(f"wrote {RESULTS / 'losses.png'}")


if __name__ == "__main__":
    main()
