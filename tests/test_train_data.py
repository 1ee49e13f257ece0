"""Image folders (class subfolders of PNG/JPEG) are read with Pillow, resized, labelled and trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive.cli import main as cli_main
from contrastive.train import TrainError
from contrastive.train.data import fingerprint, load_dataset
from contrastive.train.image_data import load_folder

Image = pytest.importorskip("PIL.Image", reason="folder: data needs Pillow (the train extra)")


def _tree(root: Path, per_class: int = 12, side: int = 12, mode: str = "RGB") -> Path:
    """Two classes: a bright horizontal bar or a bright vertical bar at a random place, plus noise."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("horizontal", "vertical")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 40, size=(side, side, 3), dtype=np.uint8)
            k = rng.integers(2, side - 2)
            if label == 0:
                img[k - 1 : k + 1, :, :] = 250
            else:
                img[:, k - 1 : k + 1, :] = 250
            pil = Image.fromarray(img).convert(mode)
            pil.save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "notes.txt").write_text("not an image")
    return root


def test_a_folder_tree_loads_as_labelled_images_of_the_requested_size(tmp_path: Path) -> None:
    x, y = load_folder(str(_tree(tmp_path / "rgb")), 8)
    assert (
        x.shape == (24, 3, 8, 8) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    )
    assert torch.equal(y, torch.tensor([0] * 12 + [1] * 12))
    gray, _ = load_folder(str(_tree(tmp_path / "gray", mode="L")), 6)
    assert gray.shape == (24, 1, 6, 6)


def test_a_png_is_read_back_exactly_at_its_own_size(tmp_path: Path) -> None:
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    (tmp_path / "t" / "a").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "t" / "a" / "img.png")
    x, _ = load_folder(str(tmp_path / "t"), 4)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), pixels / 255.0, atol=1e-7)


def test_contrastive_train_on_a_generated_image_folder(tmp_path: Path, capsys) -> None:
    root, out = _tree(tmp_path / "tree"), tmp_path / "run"
    args = ["train", "--data", f"folder:{root}", "--image-size", "8", "--epochs", "2", "--batch-size", "16"]
    assert cli_main([*args, "--quiet", "--out", str(out)]) == 0
    assert "inputs 3x8x8" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_train"], summary["n_test"], summary["encoder"]) == (19, 5, "cnn")
    assert summary["augment"] == "affine" and 0 <= summary["linear_probe_accuracy"] <= 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "is not a folder"),
        (lambda p: (p / "empty" / "cls").mkdir(parents=True) or p / "empty", "found no"),
    ],
)
def test_bad_folders_are_clear_errors(tmp_path: Path, make, message) -> None:  # noqa: ANN001
    with pytest.raises(TrainError, match=message):
        load_dataset(f"folder:{make(tmp_path)}", 0)


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree", per_class=2)
    (root / "vertical" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(TrainError, match=r"cannot read image .*broken\.png"):
        load_folder(str(root), 8)


def test_the_fingerprint_follows_the_content() -> None:
    a = load_dataset("spiked", 0)
    assert fingerprint(a) == fingerprint(load_dataset("spiked", 0))
    assert fingerprint(a) != fingerprint(load_dataset("spiked", 1))


def test_an_unknown_torchvision_dataset_lists_the_known_ones() -> None:
    pytest.importorskip("torchvision")
    with pytest.raises(TrainError, match="no such dataset; torchvision has .*MNIST"):
        load_dataset("torchvision:NoSuchSet", 0)
