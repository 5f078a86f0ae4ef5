"""Inference settings of a model folder (``inference.json``): test-time augmentation and the
decision threshold. They are chosen after training, by cross-validation, and travel with the
weights (as nnU-Net keeps its post-processing choice in the model folder). A folder without
the file gets one plain pass and the argmax, i.e. what every model did before the file existed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

INFERENCE = "inference.json"


@dataclass(frozen=True)
class InferenceConfig:
    """How a trained 2D/2.5D network is applied.

    Attributes:
        tta_shifts_px: in-plane translations ``(dx, dy)`` averaged, in pixels of the model's
            grid; ``((0, 0),)`` is a single plain pass.
        tta_mirror_x: also average the left-right mirrored passes (only sensible for a network
            trained with ``augment_flip_lr``).
        kidney_threshold: ``None`` for the argmax; else the summed kidney probability at or
            above which a voxel is kidney (:func:`kidneyseg.inference.predict.decide_labels`).
        chosen_by: free text recording how the values were chosen (e.g. the CV run).

    Raises:
        ValueError: an empty shift list, a shift larger than 64 pixels, or a threshold
            outside (0, 1).
    """

    tta_shifts_px: tuple[tuple[int, int], ...] = ((0, 0),)
    tta_mirror_x: bool = False
    kidney_threshold: float | None = None
    chosen_by: str = ""

    def __post_init__(self) -> None:
        shifts = tuple((int(a), int(b)) for a, b in self.tta_shifts_px)
        if not shifts or max(max(abs(a), abs(b)) for a, b in shifts) > 64:
            raise ValueError(f"tta_shifts_px: need 1 or more shifts of at most 64 pixels, got {self.tta_shifts_px!r}")
        object.__setattr__(self, "tta_shifts_px", shifts)
        if self.kidney_threshold is not None and not 0.0 < float(self.kidney_threshold) < 1.0:
            raise ValueError(f"kidney_threshold: expected a value in (0, 1) or null, got {self.kidney_threshold!r}")

    @property
    def tta(self):
        """The :class:`~kidneyseg.inference.predict.TestTimeAugmentation` these settings ask for."""
        from .predict import TestTimeAugmentation

        return TestTimeAugmentation(self.tta_shifts_px, self.tta_mirror_x)

    def without_tta(self) -> "InferenceConfig":
        """The same threshold with one plain pass (``kidneyseg segment --no-tta``)."""
        return dataclasses.replace(self, tta_shifts_px=((0, 0),), tta_mirror_x=False)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tta_shifts_px"] = [list(s) for s in self.tta_shifts_px]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InferenceConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        return cls(**d)


def read_inference_config(folder: str | Path) -> InferenceConfig:
    """``folder/inference.json``, or the defaults (one pass, argmax) when there is none.

    Raises:
        InputError: the file exists but is not valid.
    """
    path = Path(folder) / INFERENCE
    if not path.is_file():
        return InferenceConfig()
    try:
        return InferenceConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: invalid inference settings ({exc})") from None


def write_inference_config(settings: InferenceConfig, folder: str | Path) -> Path:
    """Write ``folder/inference.json``."""
    path = Path(folder) / INFERENCE
    path.write_text(json.dumps(settings.to_dict(), indent=2) + "\n")
    return path
