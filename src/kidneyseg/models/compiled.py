"""A cached, traced copy of a 2D MR network, so that a one-case command does not import MONAI.

Building a MONAI ``UNet`` means importing ``monai``, which imports all of its subpackages (and
through them torchvision and ``torch._dynamo``): about 4 s on this project's 2-core machine,
more than segmenting an MR volume. After the first load of a model, its network (weights
loaded, instance norm already swapped for group norm on CPU, :mod:`kidneyseg.inference.cpu`)
is traced with ``torch.jit.trace`` and saved in a cache folder; later loads read the traced
copy (0.05 s) and never import MONAI.

Why TorchScript and not ``torch.export``: an exported program gives the same logits, but
``torch.export.load`` imports ``torch._dynamo`` and takes 3 s, which is what the cache is
meant to save. TorchScript is deprecated in torch 2.14 (``torch.jit.trace``, ``save`` and
``load`` warn with a ``FutureWarning``): the cache is an optional speed-up, every failure to
read or write it falls back to building the network from MONAI, and those warnings are
silenced on purpose around these calls only.

The cache key is the SHA-256 of the weight files, the model's config, the torch
and kidneyseg versions and the device type, so a changed model or install never reads a stale
copy. Location: ``$KIDNEYSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/kidneyseg``, else
``~/.cache/kidneyseg``; ``KIDNEYSEG_NETWORK_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV_DIR = "KIDNEYSEG_CACHE_DIR"
ENV_SWITCH = "KIDNEYSEG_NETWORK_CACHE"


def cache_dir() -> Path | None:
    """The folder of traced networks, or ``None`` when ``KIDNEYSEG_NETWORK_CACHE=0``."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if os.environ.get(ENV_DIR):
        root = Path(os.environ[ENV_DIR])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "kidneyseg"
    else:
        root = Path.home() / ".cache" / "kidneyseg"
    return root / "networks"


def cache_key(weights_sha256: list[str], config: dict, device: torch.device) -> str:
    """Hex SHA-256 naming one traced network: the weight files' SHA-256, the config (as its
    ``to_dict``), the torch and kidneyseg versions and the device type (a trace records
    device-specific constants)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("kidneyseg")
    except PackageNotFoundError:  # run from a source tree without installing
        ours = "source"
    parts = [*weights_sha256, json.dumps(config, sort_keys=True, default=str), torch.__version__, ours, device.type]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def load_traced(key: str, device: torch.device) -> torch.nn.Module | None:
    """The cached traced network for ``key`` on ``device``, or ``None`` (no cache, not built
    yet, or unreadable: the caller builds the network instead)."""
    root = cache_dir()
    path = None if root is None else root / f"{key}.ts"
    if path is None or not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # a damaged or foreign file: fall back to MONAI
        log.debug("traced network %s unreadable (%s); building it", path, exc)
        return None


def save_traced(network: torch.nn.Module, example: torch.Tensor, key: str) -> Path | None:
    """Trace ``network`` (eval mode) on ``example`` (``(B, C, H, W)``, a size the network
    accepts) and write it to the cache atomically (a temporary file renamed into place, so a
    killed run never leaves half a file). Returns the path, or ``None`` when the cache is off,
    not writable, or the network cannot be traced."""
    root = cache_dir()
    if root is None:
        return None
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings (channel counts become constants, as intended) and the deprecation
            # FutureWarnings of torch.jit.trace / torch.jit.save (see the module docstring)
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(network, example, check_trace=False)
            fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
            os.close(fd)
            torch.jit.save(traced, tmp)
        path = root / f"{key}.ts"
        os.replace(tmp, path)
        return path
    except Exception as exc:
        log.debug("network not cached (%s)", exc)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return None
