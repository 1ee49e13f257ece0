"""Image data from disk (an ImageFolder-style tree, read with Pillow) or from torchvision's datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastive.train.config import TrainError

__all__ = ["IMAGE_SUFFIXES", "load_folder", "load_torchvision"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: where ``torchvision:NAME`` keeps its downloads
TORCHVISION_ROOT = Path.home() / ".cache" / "contrastive" / "torchvision"


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise TrainError("--data folder:PATH needs Pillow: pip install 'contrastive-kit[train]'") from None
    return Image


def _to_array(image: Any, size: int, mode: str) -> np.ndarray:
    """One PIL image as a (C, size, size) uint8 array in ``mode`` (RGB or L)."""
    resized = image.convert(mode).resize((size, size), _pil().Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_folder(path: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``root/CLASS/IMAGE.png|jpg``: images resized to ``size`` x ``size``, label = index of sorted CLASS.

    Images are RGB, or one channel when every image of the tree is grayscale.
    """
    root = Path(path)
    if not root.is_dir():
        raise TrainError(f"--data folder:{path}: {path!r} is not a folder (expected root/CLASS/IMAGE.png)")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        (label, f)
        for label, folder in enumerate(classes)
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise TrainError(
            f"--data folder:{path}: found no {'/'.join(IMAGE_SUFFIXES)} images in class subfolders of "
            f"{path!r} (expected root/CLASS/IMAGE.png)"
        )
    Image = _pil()
    images = []
    for _, f in files:
        try:
            with Image.open(f) as img:
                img.load()
                images.append(img.copy())
        except (OSError, ValueError) as exc:
            raise TrainError(f"--data folder:{path}: cannot read image {str(f)!r}: {exc}") from None
    mode = "L" if all(img.mode in ("L", "1", "I", "I;16") for img in images) else "RGB"
    x = np.stack([_to_array(img, size, mode) for img in images])
    y = np.array([label for label, _ in files], dtype=np.int64)
    return torch.from_numpy(x).float().div_(255.0), torch.from_numpy(y)


def load_torchvision(name: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split of ``torchvision.datasets.NAME`` (downloaded once), resized to ``size``."""
    try:
        import torchvision.datasets as datasets
    except ImportError:
        raise TrainError(f"--data torchvision:{name} needs torchvision: pip install torchvision") from None
    known = sorted(n for n in dir(datasets) if n[:1].isupper() and isinstance(getattr(datasets, n), type))
    if name not in known:
        raise TrainError(f"--data torchvision:{name}: no such dataset; torchvision has {', '.join(known)}")
    try:
        dataset = getattr(datasets, name)(root=str(TORCHVISION_ROOT / name), download=True)
    except TypeError:
        raise TrainError(
            f"--data torchvision:{name}: this dataset takes other arguments than root and download; "
            "export it to an image folder and use --data folder:PATH"
        ) from None
    except (OSError, RuntimeError) as exc:
        raise TrainError(f"--data torchvision:{name} could not be loaded or downloaded: {exc}") from None
    pairs = [dataset[i] for i in range(len(dataset))]
    mode = "L" if all(getattr(img, "mode", "RGB") == "L" for img, _ in pairs) else "RGB"
    x = np.stack([_to_array(img, size, mode) for img, _ in pairs])
    y = np.array([int(label) for _, label in pairs], dtype=np.int64)
    return torch.from_numpy(x).float().div_(255.0), torch.from_numpy(y)
