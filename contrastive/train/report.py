"""What a run shows: a progress bar, the final text report and (with matplotlib) PNG plots of the curves."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["Progress", "format_report", "write_plots"]

#: at most this many epochs are listed in the final report (evenly spaced, always the last)
REPORT_ROWS = 10
_COLUMNS = (
    ("loss", "loss"),
    ("alignment", "align"),
    ("uniformity", "unif"),
    ("effective_rank", "rank"),
    ("linear_probe_accuracy", "probe"),
    ("knn_accuracy", "knn"),
)


def _fmt(value: Any, width: int = 7) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


class Progress:
    """Trainer callbacks that show progress: tqdm on a terminal, else a line per epoch."""

    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        """Report to ``stream`` (stderr by default) unless ``quiet``."""
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bars = self.quiet is False and self.stream.isatty() and _has_tqdm()
        self._epochs: Any = None
        self._steps: Any = None

    def attach(self, trainer: Any) -> None:
        """Register the callbacks on ``trainer``."""
        if self.quiet:
            return
        trainer.add_callback("on_train_start", self._start)
        trainer.add_callback("on_batch_end", self._batch)
        trainer.add_callback("on_epoch_end", self._epoch)
        trainer.add_callback("on_train_end", self._end)

    def _start(self, trainer: Any) -> None:
        if self.bars:
            from tqdm.auto import tqdm

            self._epochs = tqdm(
                total=trainer.config.epochs,
                initial=trainer.epoch,
                desc="epochs",
                unit="epoch",
                file=self.stream,
                position=0,
            )
            self._steps = tqdm(
                total=trainer.steps_per_epoch,
                desc="steps",
                unit="step",
                file=self.stream,
                position=1,
                leave=False,
            )

    def _batch(self, trainer: Any) -> None:
        if self._steps is not None:
            self._steps.update(1)
            self._steps.set_postfix(loss=f"{trainer.batch_loss:.3f}", refresh=False)

    def _epoch(self, trainer: Any) -> None:
        record = trainer.history[-1]
        if self._epochs is not None:
            self._epochs.update(1)
            probe = record.get("linear_probe_accuracy")
            self._epochs.set_postfix(
                loss=f"{record['loss']:.3f}", probe="-" if probe is None else f"{probe:.3f}"
            )
            self._steps.reset()
        else:
            cells = " ".join(f"{label}={_fmt(record.get(key), 0)}" for key, label in _COLUMNS)
            print(f"epoch {record['epoch']}/{trainer.config.epochs} {cells}", file=self.stream, flush=True)

    def _end(self, trainer: Any) -> None:
        for bar in (self._steps, self._epochs):
            if bar is not None:
                bar.close()
        self._steps = self._epochs = None


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def format_report(summary: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The short text report printed at the end of a run."""
    s = summary
    lines = [
        f"contrastive train: {s['data']} ({s['n_train']} train / {s['n_test']} held out, "
        f"inputs {s['input_shape']}), {s['encoder']} encoder, loss {s['loss_name']}, "
        f"augmentation {s['augment']}, {s['epochs']} epochs, {s['device']}",
        "",
        "epoch " + "".join(f"{label:>7}" for _, label in _COLUMNS),
    ]
    rows = min(REPORT_ROWS, len(history))
    shown = {history[round(i * (len(history) - 1) / max(rows - 1, 1))]["epoch"] for i in range(rows)}
    for record in history:
        if record["epoch"] in shown:
            lines.append(f"{record['epoch']:>5} " + "".join(_fmt(record.get(key)) for key, _ in _COLUMNS))
    lines += [
        "",
        "held-out accuracy             linear probe    kNN",
        f"  learned encoder             {_fmt(s['linear_probe_accuracy'], 12)} {_fmt(s['knn_accuracy'])}",
        f"  random-init encoder         {_fmt(s['random_init_linear_probe_accuracy'], 12)}",
        f"  raw inputs                  {_fmt(s['raw_input_linear_probe_accuracy'], 12)}",
        "",
        f"run folder: {s['out']}  ({s['wall_time_s']:.1f} s)",
    ]
    return "\n".join(lines)


def write_plots(history: list[dict[str, Any]], folder: Path) -> list[Path]:
    """PNG plots of the loss, geometry and probe curves if matplotlib is installed; returns the files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (
        (axes[0], ("loss",)),
        (axes[1], ("alignment", "uniformity")),
        (axes[2], ("linear_probe_accuracy", "knn_accuracy")),
    )
    for ax, keys in panels:
        for key in keys:
            values = [r.get(key) for r in history]
            if all(v is not None for v in values):
                ax.plot(epochs, values, label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        if ax.lines:  # without labels (npz data with no y) the probe panel stays empty
            ax.legend()
    fig.tight_layout()
    path = folder / "curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
