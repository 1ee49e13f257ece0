"""The trained encoder is reusable: load_encoder and ``contrastive embed`` give the probed features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive.cli import main as cli_main
from contrastive.metrics import linear_probe_accuracy
from contrastive.train import TrainConfig, TrainError, load_encoder, run
from contrastive.train.data import load_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    run(TrainConfig(data="spiked", epochs=2, batch_size=200, seed=3, out=str(out)))
    return out


def test_embed_writes_the_features_load_encoder_computes(trained: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "emb" / "spiked.npz"
    assert cli_main(["embed", "--run", str(trained), "--out", str(file)]) == 0
    assert "wrote" in capsys.readouterr().out
    data = load_dataset("spiked", 3)
    with np.load(file) as archive:
        embeddings, labels = archive["embeddings"], archive["labels"]
    encoder = load_encoder(trained)
    assert not encoder.training and all(p.device.type == "cpu" for p in encoder.parameters())
    with torch.no_grad():
        expected = encoder(data.x).numpy()
    assert embeddings.shape == (2000, 64) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, data.y.numpy())


def test_the_exported_features_reproduce_the_reported_linear_probe(trained: Path, tmp_path: Path) -> None:
    file = tmp_path / "e.npz"
    assert cli_main(["embed", "--run", str(trained), "--out", str(file)]) == 0
    data = load_dataset("spiked", 3)
    with np.load(file) as archive:
        h, y = torch.from_numpy(archive["embeddings"]), torch.from_numpy(archive["labels"])
    probe = linear_probe_accuracy(
        h[data.train_index], y[data.train_index], h[data.test_index], y[data.test_index]
    )
    summary = json.loads((trained / "summary.json").read_text())
    assert probe == pytest.approx(summary["linear_probe_accuracy"], abs=1e-9)


def test_embed_of_other_data_and_without_labels(trained: Path, tmp_path: Path) -> None:
    source = tmp_path / "x.npz"
    np.savez(source, X=np.random.default_rng(1).standard_normal((7, 40)).astype(np.float32))
    file = tmp_path / "e.npz"
    assert cli_main(["embed", "--run", str(trained), "--data", f"npz:{source}", "--out", str(file)]) == 0
    with np.load(file) as archive:
        assert archive["embeddings"].shape == (7, 64) and "labels" not in archive.files


def test_embed_errors_are_one_line(trained: Path, tmp_path: Path, capsys) -> None:
    wrong = tmp_path / "w.npz"
    np.savez(wrong, X=np.zeros((5, 3), dtype=np.float32))
    cases = [
        (["--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "a.npz")], "does not exist"),
        (
            ["--run", str(trained), "--data", f"npz:{wrong}", "--out", str(tmp_path / "b.npz")],
            "does not take inputs",
        ),
        (["--run", str(trained), "--out", str(tmp_path / "c.txt")], "must be a FILE.npz"),
    ]
    for args, message in cases:
        assert cli_main(["embed", *args]) == 2
        err = capsys.readouterr().err
        assert (
            len(err.strip().splitlines()) == 1
            and err.startswith("contrastive embed: error: ")
            and message in err
        )


def test_load_encoder_refuses_a_checkpoint_that_does_not_fit(trained: Path, tmp_path: Path) -> None:
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    state["config"] = {**state["config"], "feature_dim": 5}
    (tmp_path / "bad").mkdir()
    torch.save(state, tmp_path / "bad" / "checkpoint.pt")
    with pytest.raises(TrainError, match="does not fit the model its config describes"):
        load_encoder(tmp_path / "bad")
