"""Supervised training: typed config, foreground-oversampling sampler, trainer, k-fold CV."""

from ..specs.mr_unet import TrainConfig

__all__ = ["TrainConfig"]
