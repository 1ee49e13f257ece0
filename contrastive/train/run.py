"""``contrastive train``: resolve the configuration, prepare the run folder, train, evaluate and report."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from contrastive.registry import UnknownPluginError
from contrastive.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from contrastive.train.checks import check_data, check_dry_run, restore
from contrastive.train.command import add_arguments, build_parser, config_from_args
from contrastive.train.components import (
    build_augmentation,
    build_loss,
    resolve_device,
    uses_labels,
)
from contrastive.train.config import MAX_SEED, TrainConfig, TrainError, dump_toml, write_text_atomic
from contrastive.train.data import load_dataset
from contrastive.train.evaluate import (
    FEW_LABEL_DRAWS,
    FEW_LABELS_PER_CLASS,
    baselines,
    encoded_splits,
    evaluate,
    few_label_probes,
)
from contrastive.train.models import build_model
from contrastive.train.report import Progress, format_report, write_plots
from contrastive.train.rundir import lock_run_folder, remove_stale_temporaries
from contrastive.train.trainer import DivergedError, Trainer

__all__ = ["add_arguments", "build_parser", "config_from_args", "main", "probe_epoch", "run"]

#: settings that may change when a run is resumed (the rest must match the run folder's config.toml)
RESUMABLE_CHANGES = ("epochs", "device", "out", "threads", "probe_every")
#: torch threads of a CPU run with --threads 0: the trainer's small models gain nothing from more, and
#: torch's spin-waiting threads multiplied the CPU time of the default run by 10 on a loaded 2-core machine
CPU_DEFAULT_THREADS = 1
#: with --probe-every 0, the probes run about this many times per run
PROBES_PER_RUN = 10


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


def _is_writer() -> bool:
    """Whether this process writes the run folder: rank 0 (of torchrun's environment or of the group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def probe_epoch(epoch: int, config: TrainConfig) -> bool:
    """Whether the probes run after ``epoch``: every ``probe_every`` epochs, the first and the last."""
    every = config.probe_every or max(1, math.ceil(config.epochs / PROBES_PER_RUN))
    return epoch == 1 or epoch % every == 0 or epoch >= config.epochs


def run(
    config: TrainConfig,
    resume: bool = False,
    quiet: bool = True,
    given: dict[str, Any] | None = None,
    callbacks: Iterable[tuple[str, Callable[[Trainer], None]]] = (),
    allow_data_change: bool = False,
) -> dict[str, Any]:
    """Train as ``config`` says, writing the run folder; returns the summary; ``given``: explicit settings.

    The run folder is locked while the run lasts; ``allow_data_change`` lets ``resume``
    continue on data whose fingerprint differs from the one in the folder's config.toml.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    config = dataclasses.replace(config).validate()
    if resume and config.out is None:
        raise TrainError("--resume needs --out DIR, the folder of the run to continue")
    if config.out is None:
        config.out = str(
            Path("runs")
            / f"{config.data.replace(':', '-').replace(os.sep, '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    out = Path(config.out)
    writer = _is_writer()
    with lock_run_folder(out) if writer else contextlib.nullcontext():
        if writer:
            remove_stale_temporaries(out)
        state = None
        if resume:
            if given is None:  # from Python: the settings that differ from the defaults count as given
                defaults = TrainConfig().to_dict()
                given = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
            config, state = _resumed_config(out, given)
        elif (out / CHECKPOINT_NAME).exists():
            raise TrainError(
                f"run folder {str(out)!r} already holds a run; pass --resume to continue it "
                "or choose another --out"
            )
        threads = config.threads or (
            CPU_DEFAULT_THREADS if resolve_device(config.device).type == "cpu" else 0
        )
        if threads:
            torch.set_num_threads(threads)
        summary, history = _train(config, out, state, quiet, callbacks, allow_data_change, writer)
        summary["wall_time_s"] = round(time.perf_counter() - started, 2)
        summary["cpu_time_s"] = round(time.process_time() - cpu_started, 2)
        if writer:
            write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
            write_plots(history, out, summary)
        summary["history"] = history  # for the report; not in summary.json (metrics.jsonl has it)
        return summary


def _train(
    config: TrainConfig,
    out: Path,
    state: dict[str, Any] | None,
    quiet: bool,
    callbacks: Iterable[tuple[str, Callable[[Trainer], None]]],
    allow_data_change: bool,
    writer: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build everything from ``config``, check it, train (from ``state`` if resuming): summary, history."""
    device = resolve_device(config.device)
    data = load_dataset(config.data, config.seed, config.holdout, config.image_size)
    check_data(config, data, state is not None, allow_data_change)
    torch.manual_seed(config.seed)
    if config.encoder == "auto":
        config.encoder = "cnn" if data.is_image else "mlp"
    loss = build_loss(config)
    supervised = uses_labels(loss, config.loss)
    if supervised and data.y is None:
        raise TrainError(
            f"loss {config.loss!r} trains on labels, and the data {config.data!r} has none; give labels "
            "(an npz with y, or folder: class subfolders) or use a self-supervised loss such as nt_xent"
        )
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
    check_dry_run(model, loss, augmentation, data, config, supervised)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or torch.distributed.is_initialized()
    batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if config.chunk_size and distributed and batch_norm:
        raise TrainError(
            f"--chunk-size {config.chunk_size} under torchrun needs an encoder without batch norm "
            f"({config.encoder!r} has it); use --encoder linear or leave out --chunk-size"
        )
    extra = {"input_shape": list(data.sample_shape)}
    with _process_group(device):  # torchrun: join its group for the run, leave it afterwards
        base = baselines(model.encoder.to(device), data, device, config.seed)
        train_x, train_y = data.split("train")
        trainer = Trainer(config, model, train_x, loss, augmentation, train_y if supervised else None)
        if state is not None:
            restore(trainer, state, out)
        if writer:  # everything is checked: only now is anything written
            write_text_atomic(out / "config.toml", dump_toml(config.to_dict()))
            write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in trainer.history))

        def on_epoch_end(t: Trainer) -> None:
            t.history[-1].update(
                evaluate(
                    t.raw_model,
                    augmentation,
                    data,
                    device,
                    seed=(config.seed * 1_000_003 + t.epoch) % MAX_SEED,
                    with_probes=probe_epoch(t.epoch, config),
                )
            )
            if writer:
                save_checkpoint(
                    {**t.state_dict(), "config": config.to_dict(), **extra}, out / CHECKPOINT_NAME
                )
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(t.history[-1]) + "\n")

        trainer.add_callback("on_epoch_end", on_epoch_end)
        Progress(quiet=quiet or not writer).attach(trainer)
        for event, callback in callbacks:
            trainer.add_callback(event, callback)
        try:
            history = trainer.run()
        except DivergedError as exc:
            kept = (
                f"{str(out / CHECKPOINT_NAME)!r} keeps the last good epoch ({trainer.epoch})"
                if trainer.epoch
                else "no epoch finished, so there is no checkpoint"
            )
            raise TrainError(
                f"training diverged: {exc}; stopped before that step, {kept}; "
                f"lower --lr (now {config.lr:g}), "
                "raise --temperature, or use --precision fp32, then start again"
            ) from None
        last = history[-1]
        learned = few_label_probes(
            {"": encoded_splits(trainer.raw_model.encoder, data, device)}, data, config.seed
        )
    summary = {
        "linear_probe_accuracy": last["linear_probe_accuracy"],
        "knn_accuracy": last["knn_accuracy"],
        **learned,
        **base,
        "few_label_per_class": FEW_LABELS_PER_CLASS,
        "few_label_draws": FEW_LABEL_DRAWS,
        **{k: last[k] for k in ("loss", "alignment", "uniformity", "effective_rank")},
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "data": config.data,
        "data_fingerprint": config.data_fingerprint,
        "n_train": data.train_index.numel(),
        "n_test": data.test_index.numel(),
        "input_shape": "x".join(map(str, data.sample_shape)),
        "encoder": config.encoder,
        "feature_dim": config.feature_dim,
        "loss_name": config.loss,
        "sampler": config.sampler or "default",
        "labels_used": supervised,
        "augment": config.augment,
        "augment_options": config.augment_options,
        "lr_schedule": config.lr_schedule,
        "precision": config.precision,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "out": str(out),
    }
    return summary, history


def main(argv: Sequence[str] | None = None) -> int:
    """``contrastive train``: run and print the report; bad input prints one line and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        config, given = config_from_args(args)
        summary = run(
            config,
            resume=bool(getattr(args, "resume", False)),
            quiet=bool(getattr(args, "quiet", False)),
            given=given,
            allow_data_change=bool(getattr(args, "allow_data_change", False)),
        )
    except (TrainError, UnknownPluginError) as exc:
        print(f"contrastive train: error: {exc}", file=sys.stderr)
        return 2
    if _is_writer():
        print(format_report(summary, summary["history"]))
    return 0
