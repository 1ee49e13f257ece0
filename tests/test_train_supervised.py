"""Supervised losses get the data's labels; the report names loss, sampler and whether labels were used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive.cli import main as cli_main
from contrastive.train import TrainConfig, Trainer, TrainError, build_model, run
from contrastive.train.components import build_augmentation, uses_labels


def _tiny(out: Path, **changes: object) -> TrainConfig:
    values: dict = {"data": "spiked", "epochs": 1, "batch_size": 200, "out": str(out), **changes}
    return TrainConfig(**values)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_supcon_trains_on_the_labels_and_nt_xent_does_not(tmp_path: Path) -> None:
    sup = run(_tiny(tmp_path / "sup", loss="supcon"))
    plain = run(_tiny(tmp_path / "plain", loss="nt_xent"))
    assert sup["labels_used"] is True and plain["labels_used"] is False
    # supcon without labels is nt_xent: were the labels dropped, the two runs would be identical
    assert _losses(tmp_path / "sup") != pytest.approx(_losses(tmp_path / "plain"), rel=1e-3)


class _RecordingLoss(torch.nn.Module):
    """A plugin-style loss that declares it is supervised and records the labels it receives."""

    supervised = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor | None] = []

    def forward(self, *views: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(labels)
        return sum(v.pow(2).mean() for v in views)  # type: ignore[return-value]


def test_a_loss_declaring_supervised_receives_the_labels_of_each_batch() -> None:
    config = TrainConfig(data="spiked", epochs=1, batch_size=50)
    x, y = torch.randn(100, 6), torch.arange(100) % 4
    loss = _RecordingLoss()
    assert uses_labels(loss, "my_plugin_loss") and uses_labels(object(), "supcon")
    assert not uses_labels(object(), "nt_xent")
    trainer = Trainer(
        config, build_model("linear", (6,), 4, 8, 4), x, loss, build_augmentation(config, (6,)), y
    )
    trainer.run()
    assert len(loss.seen) == 2
    seen = torch.cat([s for s in loss.seen if s is not None])
    assert seen.shape == (100,) and torch.equal(torch.bincount(seen), torch.bincount(y))  # each sample once


def test_report_header_names_loss_sampler_and_labels(tmp_path: Path, capsys) -> None:
    args = ["train", "--data", "spiked", "--epochs", "1", "--batch-size", "200", "--quiet"]
    assert cli_main([*args, "--loss", "supcon", "--sampler", "hard", "--out", str(tmp_path / "a")]) == 0
    assert "loss supcon, sampler hard, labels used (supervised)" in capsys.readouterr().out
    assert cli_main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "loss nt_xent, sampler default, labels not used (self-supervised)" in capsys.readouterr().out


def test_a_supervised_loss_on_data_without_labels_is_one_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "v.npz"
    np.savez(path, X=np.random.default_rng(0).standard_normal((60, 6)).astype(np.float32))
    code = cli_main(
        [
            "train",
            "--data",
            f"npz:{path}",
            "--loss",
            "supcon",
            "--batch-size",
            "16",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "loss 'supcon' trains on labels" in err and "has none" in err
    with pytest.raises(TrainError, match="trains on labels"):
        run(TrainConfig(data=f"npz:{path}", loss="supcon", batch_size=16, out=str(tmp_path / "r2")))
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
