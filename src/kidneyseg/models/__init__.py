"""Network builders (MONAI) and trained-model folders. No training loop here."""

from .unet import build_unet2d
from .store import ModelBundle, default_model_dir, load_model, save_model

__all__ = ["build_unet2d", "ModelBundle", "default_model_dir", "load_model", "save_model"]
