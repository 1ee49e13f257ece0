"""The flags of ``contrastive train`` and how they become a :class:`TrainConfig`."""

from __future__ import annotations

import argparse
from typing import Any

from contrastive.train.config import TrainConfig, load_toml, parse_option

__all__ = ["add_arguments", "build_parser", "config_from_args"]

_OPTION_FLAGS = {
    "loss_opt": "loss_options",
    "sampler_opt": "sampler_options",
    "augment_opt": "augment_options",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``contrastive train`` options to ``parser`` (unset flags are absent from the namespace)."""
    a = parser.add_argument
    a(
        "--data",
        help="digits (default), spiked, npz:PATH (arrays X, optional y), folder:PATH (class subfolders of "
        "PNG/JPEG images) or torchvision:NAME (downloads; needs torchvision)",
    )
    a("--image-size", type=int, help="side folder: and torchvision: images are resized to (default 32)")
    a("--holdout", type=float, help="fraction of the data held out for the probes (default 0.2)")
    a(
        "--loss",
        help="a registered loss (default nt_xent); supcon trains on the labels; see `contrastive plugins`",
    )
    a("--loss-opt", action="append", metavar="KEY=VALUE", help="loss option, repeatable")
    a("--sampler", help="a registered negative sampler (default: the loss's own)")
    a("--sampler-opt", action="append", metavar="KEY=VALUE", help="sampler option, e.g. beta=1.0; repeatable")
    a(
        "--augment",
        help="a registered augmentation or affine (default: affine for images under 32 px, simclr for "
        "larger ones, random_mask for vectors)",
    )
    a("--augment-opt", action="append", metavar="KEY=VALUE", help="augmentation option, repeatable")
    a("--temperature", type=float, help="loss temperature (default 0.2 for losses that take one)")
    a("--encoder", help="auto (default: cnn for images, mlp for vectors), cnn, mlp or linear")
    a("--feature-dim", type=int, help="encoder output, the representation the probes see (default 64)")
    a("--projection-hidden-dim", type=int, help="hidden width of the projection head (default 64)")
    a("--projection-dim", type=int, help="output of the projection head, what the loss sees (default 32)")
    a("--batch-size", type=int, help="samples per batch (default 256)")
    a("--epochs", type=int, help="number of epochs (default 40)")
    a("--lr", type=float, help="peak learning rate (default 3e-3)")
    a("--lr-schedule", help="cosine (default: linear warm-up, then cosine decay to 0) or constant")
    a("--warmup-epochs", type=float, help="epochs of linear learning-rate warm-up (default 2)")
    a("--weight-decay", type=float, help="weight decay (default 1e-6)")
    a("--optimizer", help="adam (default), adamw or sgd")
    a("--device", help="auto (default), cpu or cuda")
    a("--precision", help="fp32 (default) or bf16 (autocast of encoder and head, CPU and CUDA)")
    a("--threads", type=int, help="torch intra-op threads (default 0: 1 on CPU, torch's choice on CUDA)")
    a(
        "--chunk-size",
        type=int,
        help="encode the batch in chunks of N samples with gradient caching (same gradient, less memory; "
        "batch norm then normalises per chunk); default 0: all at once",
    )
    a("--probe-every", type=int, help="epochs between linear/kNN probes (default 0: about 10 per run)")
    a("--seed", type=int, help="seed of the split, the initialisation and all randomness (default 0)")
    a("--out", help="run folder (default runs/<data>-<time>)")
    a("--config", metavar="FILE.toml", help="read settings from a TOML file; flags override it")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a(
        "--allow-data-change",
        action="store_true",
        help="let --resume continue on data whose fingerprint differs from the run's",
    )
    a("--quiet", action="store_true", help="no progress output, only the final report")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, as TrainConfig fields."""
    values: dict[str, Any] = {}
    for key, value in vars(args).items():
        if value is None:
            continue
        if key in _OPTION_FLAGS:
            values[_OPTION_FLAGS[key]] = dict(parse_option(v) for v in value)
        elif key in TrainConfig.__dataclass_fields__:
            values[key] = value
    return values


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration (defaults < ``--config`` file < flags) and the settings explicitly given."""
    given: dict[str, Any] = {}
    if getattr(args, "config", None):
        given.update(load_toml(args.config))
    given.update(_given(args))
    return TrainConfig.from_dict(given, source=getattr(args, "config", None) or "flags"), given


def build_parser(prog: str = "contrastive train") -> argparse.ArgumentParser:
    """The parser of ``contrastive train``; flags that are not given are absent from its namespace."""
    parser = argparse.ArgumentParser(
        prog=prog,
        argument_default=argparse.SUPPRESS,
        description="Contrastive training with any registered loss, sampler and augmentation "
        "(default: SimCLR's NT-Xent on scikit-learn's 8x8 digits with small random affine warps). "
        "Writes config.toml, metrics.jsonl, checkpoint.pt, summary.json and curves.png to the run "
        "folder and prints a report.",
    )
    add_arguments(parser)
    return parser
