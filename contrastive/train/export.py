"""Reuse a trained encoder: :func:`load_encoder` from a run folder and ``contrastive embed``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from contrastive.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from contrastive.train.config import TrainConfig, TrainError
from contrastive.train.data import load_dataset
from contrastive.train.evaluate import embed
from contrastive.train.models import build_model

__all__ = ["embed_main", "load_encoder", "load_run"]


def load_run(run_dir: str | Path) -> tuple[torch.nn.Module, TrainConfig]:
    """The encoder of the run in ``run_dir`` (CPU, eval mode) and the run's configuration.

    The checkpoint is read with ``torch.load(weights_only=True)``: no code in the file runs.
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path, purpose="load_encoder")
    config = TrainConfig.from_dict(dict(state["config"]), source=str(path))
    shape = state.get("input_shape")
    if shape is None:  # checkpoints written before the input shape was stored
        data = load_dataset(config.data, config.seed, config.holdout, config.image_size)
        shape = list(data.sample_shape)
    try:
        model = build_model(
            config.encoder,
            tuple(int(s) for s in shape),
            config.feature_dim,
            config.projection_hidden_dim,
            config.projection_dim,
        )
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise TrainError(
            f"load_encoder: {str(path)!r} does not fit the model its config describes: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from None
    return model.encoder.eval(), config


def load_encoder(run_dir: str | Path) -> torch.nn.Module:
    """The trained encoder f of the run in ``run_dir``, on CPU in eval mode: ``features = encoder(x)``.

    ``x`` is shaped like the run's inputs (images (B, C, H, W) in [0, 1], or vectors (B, d));
    the weights come from ``checkpoint.pt`` by a weights-only load.
    """
    return load_run(run_dir)[0]


def build_embed_parser(prog: str = "contrastive embed") -> argparse.ArgumentParser:
    """The parser of ``contrastive embed``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write the trained encoder's features of every sample of a data set to an .npz "
        "file: array embeddings (N, D) float32, and labels (N,) when the data has them.",
    )
    parser.add_argument("--run", required=True, metavar="DIR", help="run folder of contrastive train")
    parser.add_argument("--data", help="data in contrastive train's syntax (default: the run's own data)")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the embeddings")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    return parser


def embed_main(argv: Sequence[str] | None = None) -> int:
    """``contrastive embed``: embed a data set with a run's encoder; bad input prints one line, returns 2."""
    args = build_embed_parser().parse_args(argv)
    try:
        encoder, config = load_run(args.run)
        spec = args.data or config.data
        data = load_dataset(spec, config.seed, config.holdout, config.image_size)
        expected = _input_shape(encoder, config, data.sample_shape)
        if expected is not None:
            raise TrainError(expected)
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TrainError("--device cuda was requested but torch sees no CUDA device; use --device cpu")
        features = embed(encoder.to(device), data.x, device).numpy()
        arrays = {"embeddings": features.astype(np.float32)}
        if data.y is not None:
            arrays["labels"] = data.y.numpy()
        out = Path(args.out)
        if out.suffix != ".npz":
            raise TrainError(f"--out must be a FILE.npz, got {args.out!r}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            np.savez(out, **arrays)
        except OSError as exc:
            raise TrainError(f"--out {args.out!r} cannot be written: {exc.strerror or exc}") from None
    except TrainError as exc:
        print(f"contrastive embed: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: embeddings {features.shape}" + (", labels" if data.y is not None else ""))
    return 0


def _input_shape(encoder: torch.nn.Module, config: TrainConfig, shape: tuple[int, ...]) -> str | None:
    """An error message if inputs of ``shape`` do not fit ``encoder``, else None."""
    try:
        with torch.no_grad():
            encoder(torch.zeros(2, *shape))
    except RuntimeError as exc:
        return (
            f"the encoder of this run (data {config.data!r}) does not take inputs of shape "
            f"{'x'.join(map(str, shape))}: {str(exc).splitlines()[0]}"
        )
    return None
