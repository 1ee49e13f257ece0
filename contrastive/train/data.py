"""Datasets for the reference trainer: scikit-learn's digits, spiked covariance, an .npz file, images."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contrastive.train.config import DATA_KINDS, TrainError
from contrastive.train.image_data import load_folder, load_torchvision

__all__ = ["Dataset", "fingerprint", "load_dataset"]

#: size of the spiked covariance data set: samples, ambient dimension, signal rank
SPIKED_N, SPIKED_D, SPIKED_R = 2000, 40, 4


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` ((N, C, H, W) images in [0, 1] or (N, d) vectors), labels ``y`` or None, a fixed split."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None
    train_index: torch.Tensor
    test_index: torch.Tensor

    @property
    def is_image(self) -> bool:
        """Whether the inputs are (N, C, H, W) images."""
        return self.x.dim() == 4

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one input."""
        return tuple(self.x.shape[1:])

    def split(self, part: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, y)`` of the ``"train"`` or ``"test"`` part."""
        index = self.train_index if part == "train" else self.test_index
        return self.x[index], (None if self.y is None else self.y[index])


def load_dataset(spec: str, seed: int, holdout: float = 0.2, image_size: int = 32) -> Dataset:
    """Load ``spec`` (digits, spiked, npz:PATH, folder:PATH, torchvision:NAME) and split it by ``seed``.

    ``image_size``: the side ``folder:`` and ``torchvision:`` images are resized to.
    """
    if spec == "digits":
        x, y = _digits()
    elif spec == "spiked":
        x, y = _spiked(seed)
    elif spec.startswith("npz:"):
        x, y = _npz(spec[4:])
    elif spec.startswith("folder:"):
        x, y = load_folder(spec[len("folder:") :], image_size)
    elif spec.startswith("torchvision:"):
        x, y = load_torchvision(spec[len("torchvision:") :], image_size)
    else:
        raise TrainError(f"--data must be one of {', '.join(DATA_KINDS)}; got {spec!r}")
    n = x.shape[0]
    n_test = int(round(n * holdout))
    if n_test < 1 or n - n_test < 2:
        raise TrainError(f"data {spec!r} has {n} samples; a {holdout:.0%} held-out split needs at least 3")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return Dataset(spec, x, y, order[n_test:].sort().values, order[:n_test].sort().values)


def fingerprint(data: Dataset) -> str:
    """A content fingerprint of the inputs and labels: ``sha256:`` and 16 hex digits of their SHA-256."""
    digest = hashlib.sha256()
    for t in (data.x, data.y):
        if t is not None:
            t = t.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)};".encode())
            digest.update(t.numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TrainError("--data digits needs scikit-learn: pip install 'contrastive-kit[train]'") from None
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(digits.target, dtype=torch.long)


def _spiked(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spiked covariance vectors (Ji et al. 2021); label: quadrant of the first two signal axes."""
    from contrastive.linear import spiked_covariance

    x, basis = spiked_covariance(SPIKED_N, SPIKED_D, SPIKED_R, signal_std=3.0, random_state=seed)
    signal = x @ basis[:, :2]
    y = (signal[:, 0] > 0).astype(np.int64) + 2 * (signal[:, 1] > 0).astype(np.int64)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _npz(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Arrays ``X`` ((N, C, H, W) images or (N, d) vectors) and optional ``y`` (N,) from an .npz file."""
    if not Path(path).is_file():
        raise TrainError(f"data file {path!r} does not exist (expected an .npz with arrays X and optional y)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise TrainError(f"data file {path!r} is not a readable .npz archive: {exc}") from None
    if "X" not in arrays:
        raise TrainError(f"data file {path!r} has arrays {sorted(arrays)}; it needs X (and optionally y)")
    x_np = arrays["X"]
    if x_np.ndim not in (2, 4) or x_np.shape[0] == 0 or 0 in x_np.shape:
        raise TrainError(
            f"X in {path!r} must be (N, d) vectors or (N, C, H, W) images, got shape {x_np.shape}"
        )
    if not (np.issubdtype(x_np.dtype, np.floating) or np.issubdtype(x_np.dtype, np.integer)):
        raise TrainError(f"X in {path!r} must be numeric, got dtype {x_np.dtype}")
    if x_np.ndim == 4 and x_np.dtype == np.uint8:
        x = torch.tensor(x_np, dtype=torch.float32) / 255.0
    else:
        x = torch.tensor(x_np.astype(np.float32))
    if not bool(torch.isfinite(x).all()):
        raise TrainError(f"X in {path!r} contains NaN or infinite values")
    if x.dim() == 4 and (float(x.min()) < 0 or float(x.max()) > 1):
        raise TrainError(
            f"image X in {path!r} must be uint8 or floats in [0, 1], "
            f"got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    y = None
    if "y" in arrays:
        y_np = arrays["y"]
        if y_np.shape != (x.shape[0],) or not np.issubdtype(y_np.dtype, np.integer):
            raise TrainError(
                f"y in {path!r} must be {x.shape[0]} integer labels (shape ({x.shape[0]},)), "
                f"got shape {y_np.shape} and dtype {y_np.dtype}"
            )
        y = torch.tensor(y_np.astype(np.int64))
    return x, y
