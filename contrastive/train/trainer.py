"""The reference trainer: one readable loop over epochs and batches, with callbacks (after minGPT's)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from contrastive.distributed import shard_bounds, world
from contrastive.train.components import build_optimizer, make_views, resolve_device
from contrastive.train.config import TrainConfig
from contrastive.train.syncbn import sync_batch_norm

__all__ = ["DivergedError", "Trainer"]

Callback = Callable[["Trainer"], None]
EVENTS = ("on_train_start", "on_batch_end", "on_epoch_end", "on_train_end")


class DivergedError(ArithmeticError):
    """The loss of a batch was NaN or infinite: training stopped before the step that would spread it."""

    def __init__(self, epoch: int, step: int, value: float, lr: float) -> None:
        """Record where the loss stopped being finite."""
        super().__init__(f"the loss became {value} at step {step + 1} (epoch {epoch + 1}) with lr {lr:.3g}")
        self.epoch, self.step, self.value, self.lr = epoch, step, value, lr


class Trainer:
    """Contrastive training of ``model`` on ``train_x``: two views per sample, ``loss(z1, z2)``, a step.

    The learning rate follows ``config.lr_schedule`` (linear warm-up over ``warmup_epochs``,
    then cosine decay to 0 at ``config.epochs``), set from the step counter alone, so a
    resumed run continues the same schedule. A batch whose loss is not finite raises
    :class:`~contrastive.train.trainer.DivergedError` before the optimizer step.

    Randomness (shuffling and augmentation) comes from one ``torch.Generator`` seeded
    with ``config.seed``; :meth:`state_dict` holds it with the model, the optimizer and
    torch's global RNG, so a run restored with :meth:`load_state_dict` continues exactly.
    Callbacks (``add_callback(event, fn)``, events in :data:`EVENTS`) receive the trainer;
    after each epoch ``trainer.history[-1]`` is that epoch's record, to which they may add.

    Under an initialised ``torch.distributed`` group the model is wrapped in
    ``DistributedDataParallel`` and ``config.batch_size`` is the *global* batch: every rank
    draws the same order and the same augmentations from its identically seeded generator
    (so a checkpoint from rank 0 resumes every rank) and encodes its contiguous share
    (:func:`contrastive.distributed.shard_bounds`; sizes differ by at most one). The loss
    sees the other ranks' embeddings through ``gather="auto"`` and follows the contract
    of :mod:`contrastive.distributed`, so each step takes the gradient of the global
    batch; ``batch_loss`` and the history hold the loss of the global batch.
    """

    @staticmethod
    def get_default_config() -> TrainConfig:
        """The default configuration (SimCLR on digits)."""
        return TrainConfig()

    def __init__(
        self,
        config: TrainConfig,
        model: torch.nn.Module,
        train_x: torch.Tensor,
        loss: torch.nn.Module,
        augmentation: Any,
        train_y: torch.Tensor | None = None,
    ) -> None:
        """Set up the optimizer, device and generator for training ``model`` on ``train_x``.

        ``train_y``: labels passed to the loss as ``labels=`` (supervised losses such as supcon).
        """
        self.config = config
        self.device = resolve_device(config.device)
        self.rank, self.world_size = world()
        self.raw_model = model.to(self.device)
        self.model: torch.nn.Module = self.raw_model
        if self.world_size > 1:
            self.raw_model = sync_batch_norm(self.raw_model, self.device)
            self.model = self.raw_model
            ids = [torch.cuda.current_device()] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.raw_model, device_ids=ids)
        self.loss = loss.to(self.device) if isinstance(loss, torch.nn.Module) else loss
        self.augmentation = augmentation
        self.train_x = train_x
        self.train_y = train_y
        self.optimizer = build_optimizer(config, self.raw_model.parameters())
        self.grad_cache = None
        if config.chunk_size:
            from contrastive.gradcache import GradCache

            # batch norm layers normalise each chunk with its own statistics
            self.grad_cache = GradCache(self.model, self.loss, config.chunk_size, batch_norm="per_chunk")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.batch_loss = math.nan
        self.history: list[dict[str, Any]] = []
        self.callbacks: dict[str, list[Callback]] = defaultdict(list)

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch (the last incomplete batch is dropped)."""
        return self.train_x.shape[0] // self.config.batch_size

    def add_callback(self, event: str, callback: Callback) -> None:
        """Call ``callback(trainer)`` on ``event`` (one of :data:`EVENTS`)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        self.callbacks[event].append(callback)

    def trigger_callbacks(self, event: str) -> None:
        """Run the callbacks registered for ``event`` in order."""
        for callback in self.callbacks.get(event, []):
            callback(self)

    def run(self) -> list[dict[str, Any]]:
        """Train from the current epoch up to ``config.epochs``; returns the per-epoch history."""
        config, n = self.config, self.train_x.shape[0]
        if config.batch_size > n:
            raise ValueError(f"batch_size {config.batch_size} is larger than the {n} training samples")
        if config.batch_size < 2 * self.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} (the global batch) must be at least twice the world size "
                f"{self.world_size}, so that every rank encodes at least two samples"
            )
        self.trigger_callbacks("on_train_start")
        while self.epoch < config.epochs:
            self.model.train()
            order = torch.randperm(n, generator=self.generator)
            total = 0.0
            start, stop = shard_bounds(config.batch_size, self.rank, self.world_size)
            for i in range(self.steps_per_epoch):
                index = order[i * config.batch_size : (i + 1) * config.batch_size]
                views = make_views(self.augmentation, self.train_x[index], 2, self.generator)
                labels = None if self.train_y is None else self.train_y[index][start:stop].to(self.device)
                loss = self._loss(*(v[start:stop].to(self.device) for v in views), labels=labels)
                self.batch_loss = self._global_loss(loss)
                if not math.isfinite(self.batch_loss):
                    raise DivergedError(self.epoch, self.step, self.batch_loss, self.lr_at(self.step))
                self._set_lr()
                self.optimizer.step()
                self.step += 1
                total += self.batch_loss
                self.trigger_callbacks("on_batch_end")
            self.epoch += 1
            self.history.append({"epoch": self.epoch, "loss": total / self.steps_per_epoch})
            self.trigger_callbacks("on_epoch_end")
        self.trigger_callbacks("on_train_end")
        return self.history

    def _loss(self, *views: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Encode ``views`` (under bf16 autocast with ``precision="bf16"``), back-propagate the loss.

        With ``config.chunk_size`` the encoder runs in chunks through
        :class:`~contrastive.gradcache.GradCache` (same gradient, less activation memory).
        """
        self.optimizer.zero_grad(set_to_none=True)
        options = {} if labels is None else {"labels": labels}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            if self.grad_cache is not None:
                try:
                    return self.grad_cache.backward(*views, **options)
                except ValueError as exc:
                    if "NaN or Inf" in str(exc):  # the loss refused non-finite embeddings
                        raise DivergedError(self.epoch, self.step, math.nan, self.lr_at(self.step)) from None
                    raise
            z = [self.model(v) for v in views]
        if not all(bool(torch.isfinite(z_).all()) for z_ in z):  # the losses would refuse them
            raise DivergedError(self.epoch, self.step, math.nan, self.lr_at(self.step))
        loss = self.loss(*(z_.float() for z_ in z), **options)
        loss.backward()
        return loss

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine decay to 0."""
        config = self.config
        if config.lr_schedule == "constant":
            return config.lr
        total = max(1, config.epochs * self.steps_per_epoch)
        warmup = min(total - 1, round(config.warmup_epochs * self.steps_per_epoch))
        if step < warmup:
            return config.lr * (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _set_lr(self) -> None:
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _global_loss(self, loss: torch.Tensor) -> float:
        """The loss of the global batch: the mean of the ranks' losses (the contract of the losses)."""
        value = loss.detach().clone()
        if self.world_size > 1:
            torch.distributed.all_reduce(value)
            value /= self.world_size
        return value.item()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: model, optimizer, counters, history, all RNG states."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "history": [dict(record) for record in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, including the RNG states, so training continues where it stopped."""
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = [dict(record) for record in state["history"]]
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
