"""Pipeline ``us-ensemble`` (seed 003): kidney segmentation in one 2D B-mode frame.

read (PNG/JPEG/DICOM; colour overlays removed) -> scan sector -> letterbox to the model's
canvas -> fused ensemble -> sigmoid >= 0.5 -> back to the input grid -> inside the sector
only -> largest component, holes filled -> mask ``(H, W)`` in the input's pixel grid, area
in mm^2 when the pixel spacing is known.

No model is shipped for this pipeline: the only annotated kidney ultrasound data here are
annotations whose images are released after registration, and a model trained on
phantoms would mislead on real scans. ``--model`` must name a folder made by
``kidneyseg.training.us.train_us_ensemble`` (``benchmarks/us_phantoms.py`` makes one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..labels import US_KIDNEY
from ..preprocess.ultrasound import USFrame, scan_sector
from ..specs.us import ensemble_probabilities, postprocess_mask, score_samples


@dataclass
class USResult:
    """One segmented frame.

    Attributes:
        case: case name.
        mask: ``uint8`` ``(H, W)`` on the input's pixel grid, 1 kidney.
        label_map: ``{1: "kidney"}``.
        area_px: kidney pixels.
        area_mm2: kidney area in mm^2, or ``None`` when the pixel spacing is unknown
            (never a made-up spacing of 1 mm).
        pixel_spacing_mm: ``(row, column)`` spacing used, or ``None``.
        qc: ``empty`` (no kidney found), ``components`` (before keeping the largest),
            ``touches_sector_edge``, ``overlay_pixels`` (coloured annotation pixels removed).
        seconds: wall time from frame to mask.
        probability: fused kidney probability, ``float32`` ``(H, W)``.
    """

    case: str
    mask: np.ndarray
    label_map: dict[int, str]
    area_px: int
    area_mm2: float | None
    pixel_spacing_mm: tuple[float, float] | None
    qc: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    probability: np.ndarray | None = field(default=None, repr=False)

    def row(self) -> dict[str, object]:
        """Flat row for ``areas.csv`` / ``areas.json``."""
        row: dict[str, object] = {"case": self.case, "kidney_area_px": self.area_px,
                                  "kidney_area_mm2": None if self.area_mm2 is None else round(self.area_mm2, 2)}
        row.update(self.qc)
        row["seconds"] = round(self.seconds, 3)
        return row


class USEnsemblePipeline:
    """A loaded ultrasound ensemble (see module docstring).

    Use :meth:`load` for a model folder; :meth:`segment` for one frame.
    """

    name = "us-ensemble"
    keep_largest: bool = True
    label_map: dict[int, str] = US_KIDNEY

    def __init__(self, model: torch.nn.Module, config, folder: Path | None, device: torch.device) -> None:
        self.model = model
        self.config = config
        self.folder = folder
        self.device = device
        self.keep_largest = True

    @classmethod
    def load(cls, folder: str | Path | None, device: str = "auto") -> "USEnsemblePipeline":
        """Load a model folder (``config.json`` + ``model.pt``).

        Raises:
            InputError: no folder given (no model is shipped), missing files, a config that
                is not an ultrasound ensemble's, or weights that do not fit it.
        """
        from ..models.folder import ModelFolder
        from ..models.store import resolve_device
        from ..models.us_ensemble import TripleConcatenated
        from ..specs.us import USTrainConfig

        opened = ModelFolder.open(folder, "us-ensemble", none_given=(
            "--pipeline us-ensemble: no model is shipped for ultrasound; give --model FOLDER "
            "(a folder made by kidneyseg.training.us.train_us_ensemble)"))
        config = opened.config(USTrainConfig.from_dict)
        dev = resolve_device(device)
        model = opened.load_weights(TripleConcatenated(config.members))
        folder = opened.path
        return cls.from_model(model, config, folder, dev)

    @classmethod
    def from_model(cls, model: torch.nn.Module, config, folder: Path | None, device: torch.device) -> "USEnsemblePipeline":
        """Wrap an in-memory model (set to eval mode, channels-last on CPU)."""
        model = model.to(device).eval()
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        return cls(model, config, folder, device)

    def probabilities(self, image: np.ndarray, members: bool = False) -> dict[str, np.ndarray]:
        """Kidney probability on the input grid (:func:`kidneyseg.specs.us.ensemble_probabilities`)."""
        return ensemble_probabilities(self.model, self.config.image_size, image, self.device, members)

    def segment(self, frame: USFrame | np.ndarray, case: str | None = None) -> USResult:
        """Segment one frame.

        Args:
            frame: a :class:`~kidneyseg.preprocess.ultrasound.USFrame` (from
                :func:`~kidneyseg.preprocess.ultrasound.read_us_frame`) or a ``float32``
                ``(H, W)`` array in [0, 1] (no spacing then).
            case: case name for the result (default: the frame's file name).
        """
        t0 = time.perf_counter()
        if isinstance(frame, np.ndarray):
            frame = USFrame(np.asarray(frame, dtype=np.float32))
        image = frame.array
        sector = scan_sector(image)
        prob = self.probabilities(image)["fused"]
        from scipy import ndimage as ndi

        if self.keep_largest:
            mask, n = postprocess_mask(prob, sector)
        else:
            mask = (prob >= 0.5) & sector
            n = int(ndi.label(mask)[1])
        edge = sector & ~ndi.binary_erosion(sector, iterations=2)
        area_px = int(mask.sum())
        sp = frame.pixel_spacing_mm
        area_mm2 = None if sp is None else area_px * sp[0] * sp[1]
        qc = {"empty": area_px == 0, "components": n, "touches_sector_edge": bool((ndi.binary_dilation(mask) & edge).any()),
              "overlay_pixels": 0 if frame.overlay is None else int(frame.overlay.sum())}
        name = case or (Path(frame.source).stem if frame.source is not None else "image")
        return USResult(name, mask.astype(np.uint8), dict(US_KIDNEY), area_px, area_mm2, sp, qc,
                        time.perf_counter() - t0, prob)

    def score(self, samples: Sequence) -> dict[str, float]:
        """Mean Dice of the fused model and of each member (:func:`kidneyseg.specs.us.score_samples`)."""
        return score_samples(self.model, self.config.image_size, samples, self.device)


__all__ = ["USEnsemblePipeline", "USResult", "postprocess_mask"]
