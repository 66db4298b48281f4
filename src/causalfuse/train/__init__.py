"""Training CausalFusionNet: configuration, loop, training-state checkpoints, torchrun data-parallel."""

from .config import TrainConfig
from .loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
