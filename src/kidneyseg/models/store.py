"""Trained-model folders: ``config.json`` (the typed training config), ``model.pt``
(state dict), optionally ``inference.json`` (test-time augmentation and threshold,
:mod:`kidneyseg.inference.settings`) and ``model_card.md``. Nothing is ever downloaded: the shipped model lives in
the package (``kidneyseg/assets/models``), any other is a local folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from ..errors import InputError
from ..inference.settings import InferenceConfig, read_inference_config
from ..training.config import TrainConfig
from .unet import build_unet2d, build_unet3d

WEIGHTS = "model.pt"
CONFIG = "config.json"


@dataclass
class ModelBundle:
    """A loaded model: the network (eval mode, on ``device``), its config, folder and
    inference settings (the folder's ``inference.json``, or one plain pass and the argmax)."""

    network: torch.nn.Module
    config: TrainConfig
    folder: Path
    device: torch.device
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def default_model_dir() -> Path:
    """Folder of the shipped T2-weighted MRI kidney model inside the installed package."""
    return Path(str(resources.files("kidneyseg") / "assets" / "models" / "mr_t2_kidney"))


def build_network(config: TrainConfig) -> torch.nn.Module:
    """Build the untrained network a config describes."""
    if config.spatial_dims == 3:
        return build_unet3d(1, config.network_classes, config.channels, config.strides, config.num_res_units)
    return build_unet2d(
        in_channels=2 * config.context_slices + 1,
        out_channels=config.network_classes,
        channels=config.channels,
        num_res_units=config.num_res_units,
    )


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(network: torch.nn.Module, config: TrainConfig, folder: str | Path) -> Path:
    """Write ``model.pt`` (float32 state dict) and ``config.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save(state, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return folder / WEIGHTS


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` (raises if absent)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: CUDA is not available on this machine")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device: expected auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def load_model(folder: str | Path | None = None, device: str = "auto") -> ModelBundle:
    """Load a trained model folder (default: the shipped MRI model).

    Args:
        folder: a folder with ``config.json`` and ``model.pt``; ``None`` for the shipped model.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Raises:
        InputError: missing folder or files, weights that do not fit the config, or an
            invalid ``inference.json``.
    """
    folder = Path(folder) if folder is not None else default_model_dir()
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: not a kidneyseg model folder (missing {name})")
    try:
        config = TrainConfig.from_dict(json.loads((folder / CONFIG).read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{folder / CONFIG}: invalid model config ({exc})") from None
    dev = resolve_device(device)
    network = build_network(config)
    try:
        state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise InputError(f"{folder / WEIGHTS}: weights do not fit config.json ({exc.__class__.__name__}: {first})") from None
    network.to(dev).eval()
    if dev.type == "cpu" and config.spatial_dims == 2:
        network = network.to(memory_format=torch.channels_last)
    return ModelBundle(network, config, folder, dev, read_inference_config(folder))
