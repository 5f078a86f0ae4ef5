"""Resumable training state of the iteration-based CT trainers (``kits-unet3d``, ``c2f-cascade``).

One file holds what a restarted run needs to continue bit for bit on CPU: the network and
optimiser state dicts (``torch.nn.Module.state_dict``, ``torch.optim.Optimizer.state_dict``),
the NumPy generator's bit-generator state, torch's CPU RNG state, the number of finished
iterations, the loss history and the training seconds so far. It is written through
:func:`kidneyseg.io.writers.atomic_path`, so a kill leaves the previous checkpoint or the new one.

Every trainer's checkpoint is read through :func:`load_checkpoint`: ``torch.load`` with
``weights_only=True``, so a checkpoint handed over by someone else cannot run code when a
run is resumed (PyTorch's restricted unpickler: tensors, dicts, lists, numbers, strings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.writers import atomic_path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` on the CPU.

    Raises:
        InputError: the file holds other objects than tensors and plain data (it would run
            code if unpickled in full), or is not a torch file.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"{path}: checkpoint holds more than tensors and plain data; refusing to unpickle it "
                         f"({first[:160]})") from None
    except (RuntimeError, EOFError) as exc:
        raise InputError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0][:160]})") from None


def save_training_state(path: str | Path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                        rng: np.random.Generator, iteration: int, history: list[float], seconds: float) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file + rename)."""
    with atomic_path(Path(path)) as tmp:
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "iteration": int(iteration), "history": list(history),
                    "seconds": float(seconds)}, tmp)


def restore_training_state(path: str | Path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                           rng: np.random.Generator) -> tuple[int, list[float], float]:
    """Load a checkpoint written by :func:`save_training_state` into ``net``, ``opt`` and
    ``rng`` (in place) and set torch's CPU RNG state.

    Returns:
        ``(finished iterations, loss history, training seconds so far)``; ``(0, [], 0.0)`` when
        ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        return 0, [], 0.0
    ck = load_checkpoint(path)
    net.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    rng.bit_generator.state = ck["rng"]
    torch.set_rng_state(ck["torch_rng"])
    # "train_seconds": the key of kits-unet3d checkpoints written before this module existed
    return int(ck["iteration"]), list(ck["history"]), float(ck.get("seconds", ck.get("train_seconds", 0.0)))
