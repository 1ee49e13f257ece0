"""``contrastive train``: resolve the configuration, prepare the run folder, train, evaluate and report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from contrastive.registry import UnknownPluginError
from contrastive.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from contrastive.train.components import build_augmentation, build_loss, make_views, resolve_device
from contrastive.train.config import (
    TrainConfig,
    TrainError,
    dump_toml,
    load_toml,
    parse_option,
    write_text_atomic,
)
from contrastive.train.data import Dataset, load_dataset
from contrastive.train.evaluate import baselines, evaluate
from contrastive.train.models import build_model
from contrastive.train.report import Progress, format_report, write_plots
from contrastive.train.trainer import Trainer

__all__ = ["add_arguments", "build_parser", "config_from_args", "main", "run"]

#: settings that may change when a run is resumed (the rest must match the run folder's config.toml)
RESUMABLE_CHANGES = ("epochs", "device", "out")
_OPTION_FLAGS = {
    "loss_opt": "loss_options",
    "sampler_opt": "sampler_options",
    "augment_opt": "augment_options",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``contrastive train`` options to ``parser`` (unset flags are absent from the namespace)."""
    a = parser.add_argument
    a("--data", help="digits (default), spiked, or npz:PATH with arrays X and optional y")
    a("--loss", help="a registered loss (default nt_xent); see `contrastive plugins`")
    a("--loss-opt", action="append", metavar="KEY=VALUE", help="loss option, repeatable")
    a("--sampler", help="a registered negative sampler (default: the loss's own)")
    a("--sampler-opt", action="append", metavar="KEY=VALUE", help="sampler option, e.g. beta=1.0; repeatable")
    a("--augment", help="a registered augmentation (default simclr for images, random_mask for vectors)")
    a("--augment-opt", action="append", metavar="KEY=VALUE", help="augmentation option, repeatable")
    a("--temperature", type=float, help="loss temperature (default 0.2 for losses that take one)")
    a("--encoder", help="auto (default), cnn, mlp or linear")
    a("--feature-dim", type=int, help="encoder output dimension (default 16)")
    a("--batch-size", type=int, help="samples per batch (default 256)")
    a("--epochs", type=int, help="number of epochs (default 50)")
    a("--lr", type=float, help="learning rate (default 3e-3)")
    a("--weight-decay", type=float, help="weight decay (default 1e-6)")
    a("--optimizer", help="adam (default), adamw or sgd")
    a("--device", help="auto (default), cpu or cuda")
    a("--seed", type=int, help="seed of the split, the initialisation and all randomness (default 0)")
    a("--out", help="run folder (default runs/<data>-<time>)")
    a("--config", metavar="FILE.toml", help="read settings from a TOML file; flags override it")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
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


def _resumed_config(out: Path, given: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The run folder's configuration with the allowed changes applied, and its checkpoint."""
    state = load_checkpoint(out / CHECKPOINT_NAME)
    saved = dict(state["config"])
    for key, value in given.items():
        if key not in RESUMABLE_CHANGES and saved.get(key) != value:
            raise TrainError(
                f"--resume cannot change {key} (the run in {str(out)!r} used {saved.get(key)!r}, got "
                f"{value!r}); only {', '.join(RESUMABLE_CHANGES)} may change"
            )
    saved.update({k: v for k, v in given.items() if k in RESUMABLE_CHANGES})
    return TrainConfig.from_dict(saved, source=str(out / CHECKPOINT_NAME)), state


def _check_dry_run(
    model: torch.nn.Module, loss: Any, augmentation: Any, data: Dataset, config: TrainConfig
) -> None:
    """Run augmentation, model and loss once on a few samples: fail before writing anything."""
    x = data.split("train")[0][: min(4, config.batch_size)]
    try:
        views = make_views(augmentation, x, 2, torch.Generator().manual_seed(0))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TrainError(
            f"augmentation {config.augment!r} cannot augment inputs of shape {tuple(x.shape)}: {exc}"
        ) from None
    model.eval()
    try:
        with torch.no_grad():
            loss(*(model(v) for v in views))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TrainError(
            f"loss {config.loss!r} failed on two views from encoder {config.encoder!r}: {exc}"
        ) from None
    finally:
        model.train()


@contextlib.contextmanager
def _process_group(device: torch.device) -> Iterator[None]:
    """Join the process group that ``torchrun`` describes in the environment for the block, if any.

    ``gloo`` on CPU, ``nccl`` on CUDA (each rank on the GPU ``LOCAL_RANK`` names). A group
    that is already initialised (by the caller) is used and left as it is.
    """
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def run(
    config: TrainConfig,
    resume: bool = False,
    quiet: bool = True,
    given: dict[str, Any] | None = None,
    callbacks: Iterable[tuple[str, Callable[[Trainer], None]]] = (),
) -> dict[str, Any]:
    """Train as ``config`` says, writing the run folder; returns the summary; ``given``: explicit settings."""
    started = time.perf_counter()
    config = dataclasses.replace(config).validate()
    state = None
    if resume:
        if config.out is None:
            raise TrainError("--resume needs --out DIR, the folder of the run to continue")
        if given is None:  # from Python: the settings that differ from the defaults count as given
            defaults = TrainConfig().to_dict()
            given = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
        config, state = _resumed_config(Path(config.out), given)
    elif config.out is None:
        config.out = str(
            Path("runs")
            / f"{config.data.replace(':', '-').replace(os.sep, '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    out = Path(config.out)
    if not resume and (out / CHECKPOINT_NAME).exists():
        raise TrainError(
            f"run folder {str(out)!r} already holds a run; pass --resume to continue it "
            "or choose another --out"
        )
    device = resolve_device(config.device)
    data = load_dataset(config.data, config.seed, config.holdout)
    if config.batch_size > data.train_index.numel():
        raise TrainError(
            f"--batch-size {config.batch_size} is larger than the {data.train_index.numel()} training "
            f"samples of {config.data!r}; use at most {data.train_index.numel()}"
        )
    torch.manual_seed(config.seed)
    if config.encoder == "auto":
        config.encoder = "cnn" if data.is_image else "mlp"
    loss = build_loss(config)
    augmentation = build_augmentation(config, data.sample_shape)
    try:
        model = build_model(
            config.encoder,
            data.sample_shape,
            config.feature_dim,
            config.projection_hidden_dim,
            config.projection_dim,
        )
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    _check_dry_run(model, loss, augmentation, data, config)
    with _process_group(device):  # torchrun: join its group for the run, leave it afterwards
        base = baselines(model.encoder.to(device), data, device)
        trainer = Trainer(config, model, data.split("train")[0], loss, augmentation)
        if state is not None:
            trainer.load_state_dict(state)
        writer = trainer.rank == 0
        if writer:  # everything is checked: only now is anything written
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.toml", dump_toml(config.to_dict()))
            write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in trainer.history))

        def on_epoch_end(t: Trainer) -> None:
            t.history[-1].update(
                evaluate(t.raw_model, augmentation, data, device, seed=config.seed * 1_000_003 + t.epoch)
            )
            if writer:
                save_checkpoint({**t.state_dict(), "config": config.to_dict()}, out / CHECKPOINT_NAME)
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(t.history[-1]) + "\n")

        trainer.add_callback("on_epoch_end", on_epoch_end)
        Progress(quiet=quiet or not writer).attach(trainer)
        for event, callback in callbacks:
            trainer.add_callback(event, callback)
        history = trainer.run()
        last = history[-1]
        summary = {
            "linear_probe_accuracy": last["linear_probe_accuracy"],
            "knn_accuracy": last["knn_accuracy"],
            **base,
            **{k: last[k] for k in ("loss", "alignment", "uniformity", "effective_rank")},
            "epochs": trainer.epoch,
            "steps": trainer.step,
            "data": config.data,
            "n_train": data.train_index.numel(),
            "n_test": data.test_index.numel(),
            "input_shape": "x".join(map(str, data.sample_shape)),
            "encoder": config.encoder,
            "loss_name": config.loss,
            "augment": config.augment,
            "device": str(device),
            "out": str(out),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }
        if writer:
            write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
            write_plots(history, out)
        return summary


def build_parser(prog: str = "contrastive train") -> argparse.ArgumentParser:
    """The parser of ``contrastive train``; flags that are not given are absent from its namespace."""
    parser = argparse.ArgumentParser(
        prog=prog,
        argument_default=argparse.SUPPRESS,
        description="Contrastive training with any registered loss, sampler and augmentation "
        "(default: SimCLR on scikit-learn's 8x8 digits). Writes config.toml, metrics.jsonl, "
        "checkpoint.pt and summary.json to the run folder and prints a report.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``contrastive train``: run and print the report; bad input prints one line and returns 2."""
    args = build_parser().parse_args(argv)
    finished: list[Trainer] = []
    try:
        config, given = config_from_args(args)
        summary = run(
            config,
            resume=bool(getattr(args, "resume", False)),
            quiet=bool(getattr(args, "quiet", False)),
            given=given,
            callbacks=[("on_train_end", finished.append)],
        )
    except (TrainError, UnknownPluginError) as exc:
        print(f"contrastive train: error: {exc}", file=sys.stderr)
        return 2
    if finished and finished[0].rank == 0:
        print(format_report(summary, finished[0].history))
    return 0
