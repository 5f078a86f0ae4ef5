"""The one resumable-training checkpoint format of every trainer.

A checkpoint is a dict saved with ``torch.save`` through :func:`save_checkpoint` (written via
:func:`kidneyseg.io.writers.atomic_path`, so a kill leaves the previous checkpoint or the new
one) with these keys, as far as a trainer has them:

- ``format``: :data:`FORMAT`;
- ``config``: the method's config as a dict (a resume under another config is refused);
- ``model``, ``optimizer``: ``state_dict()`` of the network and the optimiser;
- ``iteration`` (iteration-based trainers) or ``epoch`` / ``done`` (epoch-based ones): progress;
- ``seconds``: training seconds so far;
- ``rng``: the NumPy generator's bit-generator state; ``torch_rng``: torch's CPU RNG state;
- anything else a method needs (``history``, ``loss``).

It is read through :func:`read_checkpoint` / :func:`load_checkpoint`: ``torch.load`` with
``weights_only=True``, so a checkpoint handed over by someone else cannot run code when a
run is resumed (PyTorch's restricted unpickler: tensors, dicts, lists, numbers, strings).
Checkpoints written before this format (keys ``network``, ``optimiser``, ``train_seconds``,
``numpy_rng``) are read under the new names.
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


FORMAT = 1
"""Version of the checkpoint layout (the module docstring)."""

_OLD_KEYS = {"network": "model", "optimiser": "optimizer", "train_seconds": "seconds", "numpy_rng": "rng"}


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (keys as in the module docstring) to ``path`` atomically."""
    with atomic_path(Path(path)) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def read_checkpoint(path: str | Path, config: dict | None = None) -> dict | None:
    """Read a checkpoint (``None`` when ``path`` does not exist), with old key names mapped to
    the current ones.

    Args:
        config: the run's config as a dict; the checkpoint's must equal it as JSON (tuples and
            lists, integer and string keys compare equal).

    Raises:
        InputError: unreadable or unsafe file (:func:`load_checkpoint`), or a checkpoint made
            with another config (one line: use a new output folder).
    """
    path = Path(path)
    if not path.exists():
        return None
    ck = load_checkpoint(path)
    if not isinstance(ck, dict):
        raise InputError(f"{path}: not a kidneyseg checkpoint (expected a dict)")
    ck = {_OLD_KEYS.get(k, k): v for k, v in ck.items()}
    if config is not None and _recipe(ck.get("config")) != _recipe(config):
        raise InputError(f"{path}: checkpoint was made with another config; use a new output folder")
    return ck


RUNTIME_FIELDS = ("num_threads", "device", "compile")
"""Config fields that say how a run executes, not what it trains: a run may resume with other
values (more threads, another machine), as nnU-Net continues a training elsewhere."""


def _recipe(config: object) -> object:
    """:func:`_as_json` without the :data:`RUNTIME_FIELDS`."""
    plain = _as_json(config)
    return {k: v for k, v in plain.items() if k not in RUNTIME_FIELDS} if isinstance(plain, dict) else plain


def _as_json(config: object) -> object:
    """A config as its JSON reads back (tuples as lists, keys as strings), so a checkpoint
    compares equal whichever of the two forms wrote it."""
    import json

    return json.loads(json.dumps(config, sort_keys=True, default=str))


def save_training_state(path: str | Path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                        rng: np.random.Generator, iteration: int, history: list[float], seconds: float) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file + rename)."""
    save_checkpoint(path, {"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                           "torch_rng": torch.get_rng_state(), "iteration": int(iteration), "history": list(history),
                           "seconds": float(seconds)})


def restore_training_state(path: str | Path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                           rng: np.random.Generator) -> tuple[int, list[float], float]:
    """Load a checkpoint written by :func:`save_training_state` into ``net``, ``opt`` and
    ``rng`` (in place) and set torch's CPU RNG state.

    Returns:
        ``(finished iterations, loss history, training seconds so far)``; ``(0, [], 0.0)`` when
        ``path`` does not exist.
    """
    ck = read_checkpoint(path)
    if ck is None:
        return 0, [], 0.0
    net.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    rng.bit_generator.state = ck["rng"]
    torch.set_rng_state(ck["torch_rng"])
    return int(ck["iteration"]), list(ck["history"]), float(ck.get("seconds", 0.0))
