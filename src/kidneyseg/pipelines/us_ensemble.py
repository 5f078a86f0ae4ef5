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

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..preprocess.ultrasound import Letterbox, USFrame, scan_sector


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


def postprocess_mask(probability: np.ndarray, sector: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, int]:
    """Threshold, keep the sector, keep the largest component, fill its holes.

    Returns:
        (``bool`` mask, number of components before selection). Library: scipy.ndimage.
    """
    from scipy import ndimage as ndi

    fg = (probability >= threshold) & sector
    lab, n = ndi.label(fg)
    if n > 1:
        fg = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    return ndi.binary_fill_holes(fg), int(n)


class USEnsemblePipeline:
    """A loaded ultrasound ensemble (see module docstring).

    Use :meth:`load` for a model folder; :meth:`segment` for one frame.
    """

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
        from ..models.store import resolve_device
        from ..models.us_ensemble import TripleConcatenated
        from ..training.us import USTrainConfig

        if folder is None:
            raise InputError("--pipeline us-ensemble: no model is shipped for ultrasound; give --model FOLDER "
                             "(a folder made by kidneyseg.training.us.train_us_ensemble)")
        folder = Path(folder)
        for name in ("config.json", "model.pt"):
            if not (folder / name).is_file():
                raise InputError(f"{folder}: not a kidneyseg model folder (missing {name})")
        try:
            d = json.loads((folder / "config.json").read_text())
            if d.get("pipeline") != "us-ensemble":
                raise ValueError(f"made for pipeline {d.get('pipeline', 'mr-t2-unet')!r}, not us-ensemble")
            config = USTrainConfig.from_dict(d)
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{folder / 'config.json'}: invalid ultrasound model config ({exc})") from None
        dev = resolve_device(device)
        model = TripleConcatenated(config.members)
        try:
            model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
        except Exception as exc:
            raise InputError(f"{folder / 'model.pt'}: weights do not fit config.json ({exc.__class__.__name__})") from None
        return cls.from_model(model, config, folder, dev)

    @classmethod
    def from_model(cls, model: torch.nn.Module, config, folder: Path | None, device: torch.device) -> "USEnsemblePipeline":
        """Wrap an in-memory model (set to eval mode, channels-last on CPU)."""
        model = model.to(device).eval()
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        return cls(model, config, folder, device)

    def probabilities(self, image: np.ndarray, members: bool = False) -> dict[str, np.ndarray]:
        """Kidney probability on the input grid, ``float32`` ``(H, W)``.

        Args:
            image: ``float32`` ``(H, W)`` in [0, 1].
            members: also return each member's probability (keys are member names).

        Returns:
            ``{"fused": p, <member>: p, ...}``.
        """
        lb = Letterbox(tuple(image.shape), self.config.image_size)
        x = torch.from_numpy(lb.forward(image.astype(np.float32), order=1))[None, None].to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = self.model.member_logits(x)
            fused = self.model.fuse(logits)
        out = {"fused": fused}
        if members:
            out.update(dict(zip(self.model.member_names, logits)))
        return {k: lb.back(torch.sigmoid(v)[0, 0].float().cpu().numpy(), order=1) for k, v in out.items()}

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
        return USResult(name, mask.astype(np.uint8), {1: "kidney"}, area_px, area_mm2, sp, qc,
                        time.perf_counter() - t0, prob)

    def score(self, samples: Sequence) -> dict[str, float]:
        """Mean Dice of the fused model and of each member on ``samples``
        (:class:`~kidneyseg.training.us.USSample`), after the same post-processing."""
        from ..metrics.overlap import dice

        scores: dict[str, list[float]] = {}
        for s in samples:
            sector = s.sector if s.sector is not None else scan_sector(s.image)
            for name, p in self.probabilities(s.image, members=True).items():
                m, _ = postprocess_mask(p, sector)
                scores.setdefault(name, []).append(dice(m, s.mask.astype(bool)))
        return {k: round(float(np.mean(v)), 4) for k, v in scores.items()}


def write_us_outputs(result: USResult, frame: USFrame, out_dir: Path, overlay: bool = True) -> dict[str, Path]:
    """Write ``<case>_seg.png`` (``uint8``, 0/1, the input's size), ``<case>_labels.json``
    and ``<case>_overlay.png`` atomically (all or none)."""
    from PIL import Image as PILImage

    from ..io import AtomicOutputs

    paths = {"seg": out_dir / f"{result.case}_seg.png", "labels": out_dir / f"{result.case}_labels.json"}
    if overlay:
        paths["overlay"] = out_dir / f"{result.case}_overlay.png"
    with AtomicOutputs(overwrite=True) as outs:
        PILImage.fromarray(result.mask).save(outs.stage(paths["seg"]), format="PNG")
        outs.stage(paths["labels"]).write_text(json.dumps({str(k): v for k, v in result.label_map.items()}, indent=2) + "\n")
        if overlay:
            overlay_png(frame.array, result, outs.stage(paths["overlay"]))
    return paths


def overlay_png(image: np.ndarray, result: USResult, path: Path) -> None:
    """The frame in grey with the kidney outline and its area (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape
    fig = plt.figure(figsize=(w / 100, h / 100 + 0.3), dpi=100)
    ax = fig.add_axes([0, 0, 1, h / (h + 30)])
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if result.mask.any():
        ax.contour(result.mask, levels=[0.5], colors=["#ff3030"], linewidths=1.2)
    ax.set_axis_off()
    area = f"{result.area_mm2:.0f} mm\u00b2" if result.area_mm2 is not None else f"{result.area_px} px (spacing unknown)"
    fig.text(0.01, 1 - 0.5 * 30 / (h + 30), f"{result.case}: kidney {area}", fontsize=9, va="center")
    fig.savefig(path, format="png")
    plt.close(fig)


def segment_us_files(files: Sequence[Path], out: Path, model, device: str, overwrite: bool, overlay: bool,
                     keep_largest: bool, pixel_spacing_mm: float | None = None):
    """Segment 2D frames into ``out``: per case the mask PNG, label map and overlay, and for
    all finished cases ``areas.csv`` and ``areas.json``. A failing case is reported and the
    others go on.

    Returns:
        :class:`~kidneyseg.api.SegmentSummary`.
    """
    from ..api import SegmentSummary
    from ..io import case_name
    from ..preprocess.ultrasound import read_us_frame
    from ..report import write_volume_tables

    if not overwrite:
        targets = [out / "areas.csv", out / "areas.json"]
        for f in files:
            c = case_name(f)
            targets += [out / f"{c}_seg.png", out / f"{c}_labels.json"] + ([out / f"{c}_overlay.png"] if overlay else [])
        existing = [t for t in targets if t.exists()]
        if existing:
            raise InputError(f"{existing[0]}: output exists (use --overwrite to replace it)")
    pipe = USEnsemblePipeline.load(model, device)  # a bad model folder stops the run
    pipe.keep_largest = keep_largest
    summary = SegmentSummary()
    for f in files:
        case = case_name(f)
        try:
            frame = read_us_frame(f, pixel_spacing_mm)
            result = pipe.segment(frame, case)
            try:
                write_us_outputs(result, frame, out, overlay)
            except OSError as exc:
                raise InputError(f"{out}: cannot write the outputs of {case} ({exc.strerror or exc})") from None
            summary.rows.append(result.row())
        except InputError as exc:
            summary.failures.append((case, str(exc)))
    if summary.rows:
        write_volume_tables(summary.rows, out, overwrite=True, stem="areas")
    return summary


__all__ = ["USEnsemblePipeline", "USResult", "overlay_png", "postprocess_mask", "segment_us_files", "write_us_outputs"]
