"""Training knobs: the learning-rate schedule, bf16, threads, option errors, few-label draws and the plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from contrastive.cli import main as cli_main
from contrastive.train import TrainConfig, Trainer, build_model, run
from contrastive.train.components import build_augmentation, build_loss
from contrastive.train.evaluate import few_label_subsets
from contrastive.train.report import plot_curves

TINY = ["train", "--data", "spiked", "--epochs", "1", "--batch-size", "200", "--quiet"]


def _trainer(**changes: object) -> Trainer:
    values: dict = {"data": "spiked", "epochs": 10, "batch_size": 10, **changes}
    config = TrainConfig(**values)
    model = build_model("linear", (4,), 2, 4, 2)
    return Trainer(config, model, torch.randn(100, 4), build_loss(config), build_augmentation(config, (4,)))


def test_cosine_schedule_warms_up_peaks_at_lr_and_decays_to_zero() -> None:
    t = _trainer(lr=0.1, warmup_epochs=2.0)  # 10 steps per epoch, 100 in all, 20 of warm-up
    lrs = [t.lr_at(step) for step in range(100)]
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21], strict=True))
    assert max(lrs) == pytest.approx(0.1) and lrs[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:], strict=False)) and lrs[-1] < 1e-4
    assert _trainer(lr=0.1, lr_schedule="constant").lr_at(57) == 0.1


def test_the_optimizer_uses_the_scheduled_rate() -> None:
    t = _trainer(lr=0.05, epochs=2)
    t.run()
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(t.lr_at(t.step - 1))


def test_bf16_autocast_trains_with_finite_losses(tmp_path: Path) -> None:
    summary = run(
        TrainConfig(data="spiked", epochs=2, batch_size=200, precision="bf16", out=str(tmp_path / "r"))
    )
    assert summary["precision"] == "bf16" and math.isfinite(summary["loss"])


def test_threads_sets_torch_intra_op_threads(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        assert (
            run(TrainConfig(data="spiked", epochs=1, batch_size=400, threads=2, out=str(tmp_path / "a")))[
                "threads"
            ]
            == 2
        )
        assert (
            run(TrainConfig(data="spiked", epochs=1, batch_size=400, out=str(tmp_path / "b")))["threads"] == 1
        )
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--loss-opt", "bogus=1"],
            r"loss 'nt_xent' has no option bogus \(--loss-opt\); its options are .*temperature",
        ),
        (["--augment-opt", "bogus=1"], r"augmentation 'random_mask' has no option bogus .*its options are "),
        (["--augment", "nope"], r"unknown augmentation 'nope'.*the trainer also has: affine"),
        (["--precision", "fp8"], r"--precision must be one of fp32, bf16"),
        (["--lr-schedule", "step"], r"--lr-schedule must be one of cosine, constant"),
        (["--threads", "-1"], r"--threads must be >= 0"),
        (["--holdout", "1.5"], r"--holdout must be a fraction"),
    ],
)
def test_bad_knobs_are_one_line_listing_what_is_valid(tmp_path: Path, capsys, flags, message) -> None:
    import re

    assert cli_main([*TINY, "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_few_label_subsets_hold_k_per_class_and_differ_between_draws() -> None:
    y = torch.arange(300) % 3
    subsets = few_label_subsets(y, 10, 4, seed=0)
    assert len(subsets) == 4
    for s in subsets:
        assert torch.equal(torch.bincount(y[s]), torch.tensor([10, 10, 10])) and s.unique().numel() == 30
    assert not torch.equal(subsets[0], subsets[1])
    assert all(torch.equal(a, b) for a, b in zip(subsets, few_label_subsets(y, 10, 4, seed=0), strict=True))


def test_the_plot_has_titles_axis_labels_and_baseline_lines() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    history = [
        {
            "epoch": e,
            "loss": 5.0 - e,
            "alignment": 0.2,
            "uniformity": -2.0,
            "linear_probe_accuracy": 0.9,
            "knn_accuracy": 0.8,
        }
        for e in (1, 2, 3)
    ]
    summary = {"random_init_linear_probe_accuracy": 0.5, "raw_input_linear_probe_accuracy": 0.7}
    fig = plot_curves(history, summary)
    try:
        axes = fig.axes
        assert all(ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in axes)
        levels = {float(line.get_ydata()[0]) for line in axes[2].lines}
        assert {0.5, 0.7} <= levels
        assert any("random-init" in t.get_text() for t in axes[2].get_legend().get_texts())
    finally:
        plt.close(fig)
