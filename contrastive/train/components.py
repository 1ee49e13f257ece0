"""Turn a :class:`TrainConfig` into the objects a run needs: loss, augmentation, optimizer, device."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from contrastive.registry import UnknownPluginError, get_augmentation, get_loss, get_registry, get_sampler
from contrastive.train.augment import TRAINER_AUGMENTATIONS
from contrastive.train.config import TrainConfig, TrainError

__all__ = [
    "build_augmentation",
    "build_loss",
    "build_optimizer",
    "make_views",
    "resolve_device",
    "uses_labels",
]

#: losses that train on the data's labels (besides any loss with a ``supervised = True`` attribute)
SUPERVISED_LOSSES = ("supcon",)
#: temperature given to losses that take one when --temperature is not set
DEFAULT_TEMPERATURE = 0.2
#: SimCLR options for images smaller than 32 px: SimCLR's crop scale (0.08, 1) leaves almost nothing
#: of an 8x8 digit, and its colour strength 1.0 often blanks one-channel images; blur is off below 64 px
SMALL_IMAGE_SIMCLR: dict[str, Any] = {"scale": [0.5, 1.0], "s": 0.5}
SMALL_IMAGE_SIDE = 32


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _option_names(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword options ``factory`` takes (None if it takes ``**kwargs`` or has no signature)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name != "self"]


def _construct(
    kind: str, make: Callable[..., Any], name: str, options: dict[str, Any], factory: Callable[..., Any]
) -> Any:
    valid = _option_names(factory)
    flag = {"loss": "--loss-opt", "sampler": "--sampler-opt", "augmentation": "--augment-opt"}[kind]
    if valid is not None:
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TrainError(
                f"{kind} {name!r} has no option {', '.join(unknown)} ({flag}); "
                f"its options are {', '.join(valid) or 'none'}"
            )
    try:
        return make(name, **options)
    except UnknownPluginError:
        raise
    except (TypeError, ValueError) as exc:
        listed = f"; its options are {', '.join(valid)}" if valid else ""
        raise TrainError(f"cannot create {kind} {name!r} with options {options}: {exc}{listed}") from None


def uses_labels(loss: Any, name: str) -> bool:
    """Whether the trainer gives ``loss`` the data's labels: supcon, or a loss with ``supervised = True``."""
    return name in SUPERVISED_LOSSES or bool(getattr(loss, "supervised", False))


def build_loss(config: TrainConfig) -> torch.nn.Module:
    """The loss named by ``config.loss`` with options, temperature and sampler; records resolved values."""
    factory = get_registry().factory("loss", config.loss)
    options = dict(config.loss_options)
    if _accepts(factory, "temperature"):
        if config.temperature is None:
            config.temperature = float(options.get("temperature", DEFAULT_TEMPERATURE))
        options["temperature"] = config.temperature
    elif config.temperature is not None:
        raise TrainError(
            f"loss {config.loss!r} takes no temperature; leave out --temperature (got {config.temperature})"
        )
    if config.sampler is not None:
        if not _accepts(factory, "sampler"):
            raise TrainError(
                f"loss {config.loss!r} takes no negative sampler; leave out --sampler "
                f"(got {config.sampler!r})"
            )
        sampler_factory = get_registry().factory("sampler", config.sampler)
        options["sampler"] = _construct(
            "sampler", get_sampler, config.sampler, dict(config.sampler_options), sampler_factory
        )
    elif config.sampler_options:
        raise TrainError(f"--sampler-opt {config.sampler_options} was given without --sampler NAME")
    return _construct("loss", get_loss, config.loss, options, factory)


def build_augmentation(config: TrainConfig, sample_shape: tuple[int, ...]) -> Any:
    """The augmentation named by ``config.augment``; records the resolved name and options in ``config``.

    Default: ``affine`` (:class:`~contrastive.train.augment.RandomAffine`) for images under 32 px,
    such as the digits, which are not mirror-symmetric; ``simclr`` for larger images;
    ``random_mask`` for vectors.
    """
    is_image = len(sample_shape) == 3
    if config.augment is None:
        small = is_image and max(sample_shape[1:]) < SMALL_IMAGE_SIDE
        config.augment = ("affine" if small else "simclr") if is_image else "random_mask"
    options = dict(config.augment_options)
    if config.augment in TRAINER_AUGMENTATIONS:
        factory = TRAINER_AUGMENTATIONS[config.augment]
        options = {**_defaults(factory), **options}  # the whole recipe goes into config.toml and the report
        config.augment_options = options
        return _construct("augmentation", _trainer_augmentation, config.augment, options, factory)
    try:
        factory = get_registry().factory("augmentation", config.augment)
    except UnknownPluginError as exc:
        raise UnknownPluginError(f"{exc}; the trainer also has: {', '.join(TRAINER_AUGMENTATIONS)}") from None
    if is_image and "size" not in options and _accepts(factory, "size"):
        options["size"] = [int(sample_shape[1]), int(sample_shape[2])]
    if config.augment == "simclr" and is_image and max(sample_shape[1:]) < SMALL_IMAGE_SIDE:
        options = {**SMALL_IMAGE_SIMCLR, **options}
    config.augment_options = options
    return _construct("augmentation", get_augmentation, config.augment, options, factory)


def _defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of ``factory`` (tuples as lists, as TOML writes them)."""
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in inspect.signature(factory).parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def _trainer_augmentation(name: str, **options: Any) -> Any:
    return TRAINER_AUGMENTATIONS[name](**options)


def make_views(augmentation: Any, x: torch.Tensor, n: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``n`` augmented views of the batch ``x``, drawing randomness from ``generator``."""
    if hasattr(augmentation, "views"):
        return list(augmentation.views(x, n=n, generator=generator))
    return [augmentation(x, generator=generator) for _ in range(n)]


def build_optimizer(config: TrainConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (momentum 0.9) with ``config.lr`` and ``config.weight_decay``."""
    params = list(parameters)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise TrainError(f"--optimizer must be adam, adamw or sgd, got {config.optimizer!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU raises :class:`TrainError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError(
            "--device cuda was requested but torch sees no CUDA device; use --device cpu or auto"
        )
    if name not in ("cpu", "cuda"):
        raise TrainError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)
