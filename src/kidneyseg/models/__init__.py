"""Network builders (MONAI) and trained-model folders. No training loop here."""

from .store import ModelBundle, default_model_dir, load_model, save_model

__all__ = ["build_unet2d", "ModelBundle", "default_model_dir", "load_model", "save_model"]


def __getattr__(name: str):
    if name == "build_unet2d":  # imported on use: importing MONAI takes seconds
        from .unet import build_unet2d

        return build_unet2d
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
