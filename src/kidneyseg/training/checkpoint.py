"""Resumable training state of the iteration-based CT trainers (``kits-unet3d``, ``c2f-cascade``).

One file holds what a restarted run needs to continue bit for bit on CPU: the network and
optimiser state dicts (``torch.nn.Module.state_dict``, ``torch.optim.Optimizer.state_dict``),
the NumPy generator's bit-generator state, torch's CPU RNG state, the number of finished
iterations, the loss history and the training seconds so far. It is written through
:func:`kidneyseg.io.writers.atomic_path`, so a kill leaves the previous checkpoint or the new one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io.writers import atomic_path


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
    ck = torch.load(path, map_location="cpu", weights_only=False)
    net.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    rng.bit_generator.state = ck["rng"]
    torch.set_rng_state(ck["torch_rng"])
    # "train_seconds": the key of kits-unet3d checkpoints written before this module existed
    return int(ck["iteration"]), list(ck["history"]), float(ck.get("seconds", ck.get("train_seconds", 0.0)))
