"""Supervised training: typed config, foreground-oversampling sampler, trainer, k-fold CV."""

from .config import TrainConfig

__all__ = ["TrainConfig"]
