"""The reference trainer: run folder, configuration, Python API with callbacks, lazy import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastive.cli import main as cli_main
from contrastive.train import TrainConfig, Trainer, TrainError, build_model, run
from contrastive.train.components import build_augmentation, build_loss
from contrastive.train.config import dump_toml, load_toml, parse_option

TINY = ["--data", "spiked", "--epochs", "2", "--batch-size", "200", "--quiet"]


def _tiny(out: Path, **changes: object) -> TrainConfig:
    values: dict = {"data": "spiked", "epochs": 2, "batch_size": 200, "out": str(out), **changes}
    return TrainConfig(**values)


@pytest.mark.slow
def test_import_contrastive_and_its_cli_does_not_import_the_trainer() -> None:
    code = (
        "import sys, contrastive, contrastive.cli; contrastive.cli.build_parser(); "
        "assert not any(m.startswith('contrastive.train') for m in sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_run_folder_holds_resolved_config_metrics_checkpoint_and_summary(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main(["train", *TINY, "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "random-init encoder" in report and "raw inputs" in report
    config = load_toml(out / "config.toml")
    assert config["augment"] == "random_mask" and config["encoder"] == "mlp" and config["temperature"] == 0.2
    assert TrainConfig.from_dict(config).epochs == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("loss", "alignment", "uniformity", "effective_rank", "linear_probe_accuracy", "knn_accuracy"):
        assert all(isinstance(r[key], float) for r in records), key
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and isinstance(state["rng"]["generator"], torch.Tensor)
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "linear_probe_accuracy",
        "knn_accuracy",
        "random_init_linear_probe_accuracy",
        "raw_input_linear_probe_accuracy",
    ):
        assert 0.0 <= summary[key] <= 1.0, key
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_digits_default_is_the_affine_recipe_recorded_in_config(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="--data digits needs the train extra (scikit-learn)")
    summary = run(TrainConfig(epochs=1, batch_size=256, probe_every=1, out=str(tmp_path / "d")), quiet=True)
    assert summary["augment"] == "affine" and summary["feature_dim"] == 64
    config = load_toml(tmp_path / "d" / "config.toml")
    assert config["augment_options"] == {"degrees": 15.0, "translate": 0.125, "scale": [0.9, 1.1]}
    assert (tmp_path / "d" / "curves.png").is_file()


@pytest.mark.slow
def test_digits_cnn_simclr_run_uses_the_small_image_simclr_options(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="--data digits needs the train extra (scikit-learn)")
    summary = run(
        TrainConfig(epochs=1, batch_size=256, augment="simclr", out=str(tmp_path / "d")), quiet=True
    )
    assert summary["encoder"] == "cnn" and summary["augment"] == "simclr" and summary["n_test"] == 359
    config = load_toml(tmp_path / "d" / "config.toml")
    assert config["augment_options"] == {"scale": [0.5, 1.0], "s": 0.5, "size": [8, 8]}


@pytest.mark.slow
def test_flags_override_the_config_file(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(
        dump_toml(
            {
                "data": "spiked",
                "epochs": 5,
                "batch_size": 100,
                "sampler": "hard",
                "sampler_options": {"beta": 0.5},
            }
        )
    )
    out = tmp_path / "run"
    code = cli_main(
        [
            "train",
            "--config",
            str(file),
            "--epochs",
            "1",
            "--sampler-opt",
            "beta=2.0",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    config = load_toml(out / "config.toml")
    assert (config["epochs"], config["batch_size"], config["sampler_options"]) == (1, 100, {"beta": 2.0})


def test_config_toml_round_trips() -> None:
    config = TrainConfig(
        data='npz:a "b".npz',
        sampler="hard",
        sampler_options={"beta": 1.0, "tau_plus": 0.1},
        augment_options={"scale": [0.5, 1.0]},
        temperature=0.3,
    )
    assert TrainConfig.from_dict(_loads(dump_toml(config.to_dict()))) == config


def _loads(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("beta=1.0", ("beta", 1.0)),
        ("n=3", ("n", 3)),
        ("scale=[0.5, 1]", ("scale", [0.5, 1])),
        ("mode=one", ("mode", "one")),
        ("flag=true", ("flag", True)),
    ],
)
def test_options_are_parsed_as_toml_values_or_strings(text: str, expected: tuple) -> None:
    assert parse_option(text) == expected


def test_an_option_without_equals_sign_is_an_error() -> None:
    with pytest.raises(TrainError, match="KEY=VALUE"):
        parse_option("beta")


@pytest.mark.slow
def test_any_registered_loss_and_sampler_is_selectable_by_name(tmp_path: Path) -> None:
    summary = run(_tiny(tmp_path / "hard", loss="supcon", sampler="hard", sampler_options={"beta": 1.0}))
    assert summary["loss_name"] == "supcon"
    spectral = run(_tiny(tmp_path / "spectral", loss="spectral", epochs=1))
    assert spectral["loss_name"] == "spectral"
    assert "temperature" not in load_toml(tmp_path / "spectral" / "config.toml")


@pytest.mark.slow
def test_trainer_is_usable_from_python_with_callbacks() -> None:
    config = TrainConfig(data="spiked", epochs=2, batch_size=50)
    torch.manual_seed(0)
    x = torch.randn(200, 10)
    model = build_model("linear", (10,), 4, 16, 8)
    trainer = Trainer(config, model, x, build_loss(config), build_augmentation(config, (10,)))
    seen: list[tuple[str, int]] = []
    trainer.add_callback("on_batch_end", lambda t: seen.append(("batch", t.step)))
    trainer.add_callback("on_epoch_end", lambda t: seen.append(("epoch", t.epoch)))
    history = trainer.run()
    assert [r["epoch"] for r in history] == [1, 2]
    assert seen.count(("epoch", 2)) == 1 and sum(1 for e, _ in seen if e == "batch") == 8
    with pytest.raises(ValueError, match="unknown event"):
        trainer.add_callback("on_step", print)


@pytest.mark.slow
def test_vectors_from_npz_without_labels_train_and_leave_the_probes_empty(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    import numpy as np

    np.savez(path, X=np.random.default_rng(0).standard_normal((60, 6)).astype(np.float32))
    summary = run(TrainConfig(data=f"npz:{path}", epochs=1, batch_size=16, out=str(tmp_path / "run")))
    assert summary["linear_probe_accuracy"] is None and summary["raw_input_linear_probe_accuracy"] is None
