"""What a run shows: a progress bar, the final text report and (with matplotlib) PNG plots of the curves."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["Progress", "format_report", "plot_curves", "write_plots"]

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


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def format_report(summary: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The short text report printed at the end of a run."""
    s = summary
    labels = "labels used (supervised)" if s["labels_used"] else "labels not used (self-supervised)"
    recipe = s["augment"] + (f" ({_options(s['augment_options'])})" if s.get("augment_options") else "")
    lines = [
        f"contrastive train: {s['data']} ({s['n_train']} train / {s['n_test']} held out, "
        f"inputs {s['input_shape']}), {s['encoder']} encoder ({s['feature_dim']}-d features), "
        f"{s['epochs']} epochs, {s['device']}",
        f"loss {s['loss_name']}, sampler {s['sampler']}, {labels}",
        f"augmentation {recipe}",
        "",
        "epoch " + "".join(f"{label:>7}" for _, label in _COLUMNS),
    ]
    probed = [r for r in history if r.get("linear_probe_accuracy") is not None] or history
    rows = min(REPORT_ROWS, len(probed))
    shown = {probed[round(i * (len(probed) - 1) / max(rows - 1, 1))]["epoch"] for i in range(rows)}
    for record in history:
        if record["epoch"] in shown:
            lines.append(f"{record['epoch']:>5} " + "".join(_fmt(record.get(key)) for key, _ in _COLUMNS))
    few = f"{s.get('few_label_per_class', 10)} labels/class"
    lines += [
        "",
        f"held-out accuracy             linear probe    kNN   probe, {few}",
        f"  learned encoder             {_fmt(s['linear_probe_accuracy'], 12)} {_fmt(s['knn_accuracy'])}"
        f" {_fmt(s['few_label_probe_accuracy'], 9)}",
        f"  random-init encoder         {_fmt(s['random_init_linear_probe_accuracy'], 12)} {'':>7}"
        f" {_fmt(s['random_init_few_label_probe_accuracy'], 9)}",
        f"  raw inputs                  {_fmt(s['raw_input_linear_probe_accuracy'], 12)} {'':>7}"
        f" {_fmt(s['raw_input_few_label_probe_accuracy'], 9)}",
        "",
        f"run folder: {s['out']}  ({s['wall_time_s']:.1f} s wall, {s['cpu_time_s']:.1f} s CPU, "
        f"{s['threads']} threads)",
    ]
    return "\n".join(lines)


#: the panels of curves.png: title, y-axis label and the history keys drawn
_PANELS = (
    ("contrastive loss (training batches)", "loss", ("loss",)),
    ("geometry of held-out projections", "alignment / uniformity", ("alignment", "uniformity")),
    ("held-out accuracy of the encoder", "accuracy", ("linear_probe_accuracy", "knn_accuracy")),
)
#: reference lines of the accuracy panel: summary key, legend label, line style
_BASELINES = (
    ("random_init_linear_probe_accuracy", "linear probe, random-init encoder", ":"),
    ("raw_input_linear_probe_accuracy", "linear probe, raw inputs", "--"),
)


def plot_curves(history: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> Any:
    """A matplotlib figure of the loss, geometry and probe curves, the baselines of ``summary`` as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (title, ylabel, keys) in zip(axes, _PANELS, strict=True):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if points:
                sparse = len(points) < len(history)  # probes run on some epochs only
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if sparse else None, ms=3, label=key.replace("_", " "))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    if summary is not None and axes[2].lines:
        for key, label, style in _BASELINES:
            if summary.get(key) is not None:
                value = summary[key]
                axes[2].axhline(value, linestyle=style, color="grey", label=f"{label} ({value:.3f})")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    if not axes[2].lines:  # without labels (npz data with no y) there are no probes
        axes[2].text(0.5, 0.5, "no labels: no probes", ha="center", va="center", transform=axes[2].transAxes)
    fig.tight_layout()
    return fig


def write_plots(
    history: list[dict[str, Any]], folder: Path, summary: dict[str, Any] | None = None
) -> list[Path]:
    """Write :func:`plot_curves` to ``folder/curves.png``; returns the files (none without matplotlib).

    The ``train`` extra installs matplotlib; without it the run says so on stderr.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "contrastive train: matplotlib is not installed, so no curves.png "
            "(pip install 'contrastive-kit[train]')",
            file=sys.stderr,
        )
        return []
    import matplotlib.pyplot as plt

    fig = plot_curves(history, summary)
    path = folder / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
