"""Trained-model folders: ``config.json`` (the typed training config), ``model.pt``
(state dict), optionally ``inference.json`` (test-time augmentation and threshold,
:mod:`kidneyseg.inference.settings`), ``ensemble.json`` (several weight files of that
config whose softmax is averaged, :func:`kidneyseg.training.ensemble.make_ensemble`) and ``model_card.md``. Nothing is ever downloaded: the shipped model lives in
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
from ..inference.cpu import instance_norm_as_group_norm
from ..inference.settings import InferenceConfig, read_inference_config
from ..specs.mr_unet import TrainConfig
from .compiled import cache_key, load_traced, save_traced

WEIGHTS = "model.pt"
CONFIG = "config.json"
ENSEMBLE = "ensemble.json"


class SoftmaxEnsemble(torch.nn.Module):
    """Networks of one architecture whose softmax probabilities are averaged.

    ``forward`` returns the log of the members' mean softmax, so a caller that applies a
    softmax over dim 1 (as every kidneyseg predictor does) gets that mean exactly (up to
    float32 rounding): ``softmax(log p) = p / sum(p) = p``. This is nnU-Net's ensembling
    of softmax outputs, done per forward pass instead of on saved probability maps.

    Args:
        members: networks mapping the same input to logits ``(B, C, ...)``.
    """

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"SoftmaxEnsemble: expected >= 2 members, got {len(members)}")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.members[0](x).float(), dim=1)
        for m in self.members[1:]:
            p = p + torch.softmax(m(x).float(), dim=1)
        return torch.log((p / len(self.members)).clamp_min(torch.finfo(torch.float32).tiny))


@dataclass
class ModelBundle:
    """A loaded model: the network (eval mode, on ``device``), its config, folder and
    inference settings (the folder's ``inference.json``, or one plain pass and the argmax)."""

    network: torch.nn.Module
    config: TrainConfig
    folder: Path
    device: torch.device
    inference: InferenceConfig = field(default_factory=InferenceConfig)


SHIPPED_MODELS = ("mr_t2_kidney", "mr_multiprotocol_kidney")
"""Model folders shipped in ``kidneyseg/assets/models`` (each with its model card)."""


def default_model_dir(name: str = "mr_t2_kidney") -> Path:
    """Folder of a shipped model inside the installed package (default: the T2-weighted MRI
    kidney model of pipeline ``mr-t2-unet``).

    Raises:
        ValueError: ``name`` is not in :data:`SHIPPED_MODELS`.
    """
    if name not in SHIPPED_MODELS:
        raise ValueError(f"default_model_dir: expected one of {', '.join(SHIPPED_MODELS)}, got {name!r}")
    return Path(str(resources.files("kidneyseg") / "assets" / "models" / name))


def build_network(config: TrainConfig) -> torch.nn.Module:
    """Build the untrained network a config describes (MONAI, imported here: a load served
    by the traced-network cache, :mod:`kidneyseg.models.compiled`, never imports it)."""
    from .unet import build_unet2d, build_unet3d

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
    """The torch device for ``--device``.

    Accepts ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
    ``"gpu"`` / ``"gpu:N"`` (TotalSegmentator's spelling of the same) and ``"mps"`` (Apple).

    Raises:
        InputError: another spelling, or a device this machine does not have (CUDA absent, GPU
            index out of range, no MPS).
    """
    import re

    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("--device mps: Apple MPS is not available on this machine")
        return torch.device("mps")
    m = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", text)
    if m is None:
        raise InputError(f"--device: expected auto, cpu, cuda, cuda:N, gpu, gpu:N or mps, got {device!r}")
    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    index = int(m.group(2) or 0)
    if index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def load_model(folder: str | Path | None = None, device: str = "auto", pipeline: str = "mr-t2-unet") -> ModelBundle:
    """Load a trained model folder (default: the shipped MRI model).

    A 2D model (one network or a softmax ensemble) is read from the traced-network cache when an earlier load
    wrote it there (same weights, config, torch and kidneyseg versions, device type): the
    same logits without importing MONAI (:mod:`kidneyseg.models.compiled`); otherwise the
    MONAI network is built, loaded, and its traced copy cached for the next load.

    Args:
        folder: a folder with ``config.json`` and ``model.pt``; ``None`` for the shipped model.
            With an ``ensemble.json`` the network is a :class:`SoftmaxEnsemble` of its
            members' weight files.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        pipeline: the pipeline reading it (for the messages).

    Raises:
        InputError: missing folder or files, weights that do not fit the config, or an
            invalid ``inference.json`` or ``ensemble.json``.
    """
    from .folder import ModelFolder

    opened = ModelFolder.open(folder if folder is not None else default_model_dir(), pipeline, weights=(),
                              accepts=("mr-t2-unet", "mr-multiprotocol-unet"))
    folder = opened.path
    config = opened.config(TrainConfig.from_dict)
    dev = resolve_device(device)
    members = read_ensemble(folder)
    key = None
    if config.spatial_dims == 2:  # the traced copy (an ensemble's as one network), without MONAI (compiled.py)
        key = cache_key([sha256(folder / m["weights"]) for m in members], config.to_dict(), dev)
        traced = load_traced(key, dev)
        if traced is not None:
            return ModelBundle(traced, config, folder, dev, read_inference_config(folder))
    nets = [opened.load_weights(build_network(config), m["weights"]) for m in members]
    network = nets[0] if len(nets) == 1 else SoftmaxEnsemble(nets)
    network.to(dev).eval()
    if dev.type == "cpu":
        instance_norm_as_group_norm(network)
        if config.spatial_dims == 2:
            network = network.to(memory_format=torch.channels_last)
    if key is not None:
        side = 2 ** (len(config.channels) + 1)
        save_traced(network, torch.zeros(1, 2 * config.context_slices + 1, side, side, device=dev), key)
    return ModelBundle(network, config, folder, dev, read_inference_config(folder))


def read_ensemble(folder: str | Path) -> list[dict]:
    """The weight files of a model folder, checked: ``ensemble.json``'s ``members`` (each a
    dict with ``weights`` and, as :func:`kidneyseg.training.ensemble.make_ensemble` writes them, ``source``, ``seed``,
    ``sha256``), or ``[{"weights": "model.pt"}]`` for a folder without one.

    Raises:
        InputError: an unreadable ``ensemble.json``, a member that is not a weight file in
            the folder, fewer than two or repeated members.
    """
    folder = Path(folder)
    path = folder / ENSEMBLE
    if not path.is_file():
        return [{"weights": WEIGHTS}]
    try:
        members = [dict(m, weights=str(m["weights"])) for m in json.loads(path.read_text())["members"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path}: invalid ensemble file ({exc.__class__.__name__}: {exc})") from None
    names = [m["weights"] for m in members]
    for name in names:
        if Path(name).name != name or not (folder / name).is_file():
            raise InputError(f"{path}: member {name!r} is not a weight file in {folder}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError(f"{path}: expected two or more distinct members, got {names}")
    return members
