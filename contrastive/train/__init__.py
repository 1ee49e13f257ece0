"""The minimal reference trainer behind ``contrastive train`` (imported only on demand, never by the core).

``Trainer`` is usable from Python with callbacks; ``run`` does what the command does;
``load_encoder(run_dir)`` returns a trained encoder for inference.
"""

from contrastive.train.config import TrainConfig, TrainError
from contrastive.train.export import load_encoder
from contrastive.train.models import ContrastiveModel, ProjectionHead, build_model
from contrastive.train.run import run
from contrastive.train.trainer import Trainer

__all__ = [
    "ContrastiveModel",
    "ProjectionHead",
    "TrainConfig",
    "TrainError",
    "Trainer",
    "build_model",
    "load_encoder",
    "run",
]
