"""The trainer's configuration: a dataclass with defaults, read from and written to TOML."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "TrainError", "dump_toml", "load_toml", "parse_option"]

#: options whose value is a table of keyword arguments
OPTION_TABLES = ("loss_options", "sampler_options", "augment_options")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16")
DATA_KINDS = ("digits", "spiked", "npz:PATH", "folder:PATH", "torchvision:NAME")
#: seeds seed torch.Generator, which takes at most 64 bits; the trainer derives further seeds from them
MAX_SEED = 2**63 - 1
ENCODERS = ("auto", "cnn", "mlp", "linear")
DEVICES = ("auto", "cpu", "cuda")


class TrainError(ValueError):
    """A bad configuration or input: the CLI prints it as one line and exits with status 2."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; ``None``: resolved from the data (see config.toml)."""

    data: str = "digits"  # digits | spiked | npz:PATH | folder:PATH | torchvision:NAME
    image_size: int = 32  # side that folder: and torchvision: images are resized to
    data_fingerprint: str | None = None  # None: computed from the data; --resume checks it
    loss: str = "nt_xent"
    loss_options: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None  # None: the loss's own default
    sampler_options: dict[str, Any] = field(default_factory=dict)
    augment: str | None = None  # None: simclr for images, random_mask for vectors
    augment_options: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None  # None: 0.2 for losses that take a temperature
    encoder: str = "auto"  # auto: cnn for images, mlp for vectors
    feature_dim: int = 64  # encoder output, the representation the probes see
    projection_hidden_dim: int = 64
    projection_dim: int = 32
    batch_size: int = 256
    epochs: int = 40
    lr: float = 3e-3
    weight_decay: float = 1e-6
    optimizer: str = "adam"
    lr_schedule: str = "cosine"  # cosine (after a linear warm-up) | constant
    warmup_epochs: float = 2.0
    probe_every: int = 0  # epochs between linear/kNN probes; 0: about 10 probes per run, always the last
    holdout: float = 0.2  # fraction of the data held out for the probes
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 (autocast of the encoder and head)
    threads: int = 0  # torch intra-op threads; 0: 1 on CPU, torch's default on CUDA
    chunk_size: int = 0  # samples per encoder pass with gradient caching; 0: the whole batch at once
    seed: int = 0
    out: str | None = None  # None: runs/<data>-<time>

    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`TrainError` naming the first bad one."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name)))
        for name in (
            "batch_size",
            "epochs",
            "feature_dim",
            "projection_hidden_dim",
            "projection_dim",
            "image_size",
        ):
            if getattr(self, name) <= 0:
                raise TrainError(f"{_flag(name)} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise TrainError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise TrainError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.temperature is not None and not self.temperature > 0:
            raise TrainError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.holdout < 1:
            raise TrainError(f"--holdout must be a fraction in (0, 1), got {self.holdout}")
        for name in ("threads", "probe_every", "chunk_size"):
            if getattr(self, name) < 0:
                raise TrainError(f"{_flag(name)} must be >= 0 (0: the default), got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < math.inf:
            raise TrainError(f"--warmup-epochs must be a number >= 0, got {self.warmup_epochs}")
        if not 0 <= self.seed <= MAX_SEED:
            raise TrainError(f"--seed must be an integer in [0, 2**63 - 1], got {self.seed}")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("encoder", ENCODERS),
            ("device", DEVICES),
            ("lr_schedule", LR_SCHEDULES),
            ("precision", PRECISIONS),
        ):
            if getattr(self, name) not in choices:
                raise TrainError(
                    f"{_flag(name)} must be one of {', '.join(choices)}; got {getattr(self, name)!r}"
                )
        if not (
            self.data in ("digits", "spiked") or self.data.startswith(("npz:", "folder:", "torchvision:"))
        ):
            raise TrainError(f"--data must be one of {', '.join(DATA_KINDS)}; got {self.data!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dictionary (what config.toml and the checkpoint hold)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build a configuration from ``values``; unknown keys raise :class:`TrainError`."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TrainError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        return cls(**values).validate()


def _field_kind(name: str) -> str:
    annotation = str(TrainConfig.__dataclass_fields__[name].type)
    for kind in ("dict", "float", "int", "str"):
        if annotation.startswith(kind):
            return kind
    raise AssertionError(annotation)  # pragma: no cover


def _coerce(name: str, value: Any) -> Any:
    """Return ``value`` as the type of field ``name``, or raise :class:`TrainError`."""
    optional = "None" in str(TrainConfig.__dataclass_fields__[name].type)
    kind = _field_kind(name)
    if value is None and optional:
        return None
    if kind == "dict" and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return dict(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    expected = {"dict": "a table of options", "int": "an integer", "float": "a number", "str": "a string"}[
        kind
    ]
    raise TrainError(f"{_flag(name)} must be {expected}, got {value!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_option(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` (``beta=1.0``, ``scale=[0.5, 1.0]``); VALUE is TOML, else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise TrainError(f"options are KEY=VALUE with KEY a Python identifier, e.g. beta=1.0; got {text!r}")
    tomllib = _tomllib()
    try:
        return key, tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw.strip()


def _tomllib() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise TrainError("reading TOML on Python < 3.11 needs the tomli package: pip install tomli") from None
    return tomli


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file into a dictionary; a missing or malformed file raises :class:`TrainError`."""
    tomllib = _tomllib()
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise TrainError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TrainError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return (
            repr(value)
            if math.isfinite(value)
            else ("nan" if math.isnan(value) else f"{'-' if value < 0 else ''}inf")
        )
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def dump_toml(values: dict[str, Any]) -> str:
    """Render a dictionary of scalars, lists and one level of tables as TOML, leaving out ``None``."""
    lines = [
        f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None and not isinstance(v, dict)
    ]
    for key, table in values.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
