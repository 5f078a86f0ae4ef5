"""One reader of trained-model folders for every pipeline.

A model folder is what ``kidneyseg train`` writes and ``segment --model`` reads:
``config.json`` (the method's configuration; ``"pipeline"`` names the pipeline it was made
for, absent in MR U-Net folders, which are ``mr-t2-unet`` folders), one or more weight files
(PyTorch state dicts, read with ``weights_only=True`` so a folder from elsewhere cannot run
code), and optionally ``model_card.md``, ``inference.json``, ``ensemble.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import torch

from ..errors import InputError

CONFIG = "config.json"
UNNAMED_PIPELINE = "mr-t2-unet"
"""What a ``config.json`` without a ``"pipeline"`` key was made for (MR U-Net folders)."""

T = TypeVar("T")


class ModelFolder:
    """A checked model folder: it exists, holds ``config.json`` and the weight files the
    pipeline needs, and its config was made for one of the pipelines that may read it.

    Attributes:
        path: the folder.
        pipeline: the pipeline it was opened for.
        raw: ``config.json`` as read (a dict).
    """

    def __init__(self, path: Path, pipeline: str, raw: dict) -> None:
        self.path, self.pipeline, self.raw = path, pipeline, raw

    @classmethod
    def open(cls, model: str | Path | None, pipeline: str, weights: Iterable[str] = ("model.pt",),
             accepts: Iterable[str] | None = None, none_given: str | None = None) -> "ModelFolder":
        """Check and open a model folder.

        Args:
            model: the folder; ``None`` is refused with ``none_given`` (pipelines that ship a
                model resolve ``None`` to it before calling this).
            pipeline: the pipeline reading it (named in the messages).
            weights: weight files that must exist in the folder.
            accepts: pipelines whose folders this one can read (default: ``pipeline`` only).
            none_given: the message for ``model=None`` (default: nothing shipped, train one).

        Raises:
            InputError: one line: no folder given, not a folder, missing files, unreadable
                ``config.json``, or a config made for another pipeline.
        """
        if model is None:
            raise InputError(none_given or f"--pipeline {pipeline}: no model is shipped for it; pass --model FOLDER "
                                           f"(train one with: kidneyseg train --pipeline {pipeline})")
        path = Path(model)
        if not path.is_dir():
            raise InputError(f"{path}: not a kidneyseg model folder for {pipeline} (no such folder)")
        missing = [n for n in (CONFIG, *weights) if not (path / n).is_file()]
        if missing:
            raise InputError(f"{path}: not a kidneyseg model folder for {pipeline} (missing {', '.join(missing)})")
        try:
            raw = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path / CONFIG}: unreadable model config ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(raw, dict):
            raise InputError(f"{path / CONFIG}: invalid model config (expected a JSON object)")
        made_for = raw.get("pipeline", UNNAMED_PIPELINE)
        if made_for not in set(accepts or (pipeline,)):
            raise InputError(f"{path / CONFIG}: a {made_for!r} model, not {pipeline}")
        return cls(path, pipeline, raw)

    def config(self, parse: Callable[[dict], T], key: str | None = None) -> T:
        """``parse(raw)`` (or ``parse(raw[key])``), e.g. a spec's ``from_dict``.

        Raises:
            InputError: the parser rejects it (missing or invalid fields).
        """
        try:
            return parse(self.raw if key is None else self.raw[key])
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{self.path / CONFIG}: invalid {self.pipeline} model config "
                             f"({exc.__class__.__name__}: {exc})") from None

    def state(self, name: str = "model.pt", key: str | None = None) -> dict:
        """A weight file's state dict (``weights_only=True``), or its entry ``key``.

        Raises:
            InputError: missing, unreadable or not a state dict.
        """
        path = self.path / name
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            return state if key is None else state[key]
        except FileNotFoundError:
            raise InputError(f"{self.path}: {name} is missing (training unfinished?)") from None
        except Exception as exc:
            raise InputError(f"{path}: unreadable weights ({_first_line(exc)})") from None

    def load_weights(self, network: torch.nn.Module, name: str = "model.pt", key: str | None = None) -> torch.nn.Module:
        """Load weight file ``name`` into ``network`` (returned).

        Raises:
            InputError: unreadable, or the weights do not fit the network ``config.json`` describes.
        """
        state = self.state(name, key)
        try:
            network.load_state_dict(state)
        except Exception as exc:
            raise InputError(f"{self.path / name}: weights do not fit config.json ({_first_line(exc)})") from None
        return network


def _first_line(exc: BaseException) -> str:
    """``"ExcType: first line of its message"`` (at most 160 characters of it)."""
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0][:160] if text else ''}"


__all__ = ["CONFIG", "ModelFolder", "UNNAMED_PIPELINE"]
