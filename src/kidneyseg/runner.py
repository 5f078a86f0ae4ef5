"""The per-case path every segmenting entry point shares: read -> check -> pipeline -> back to
the input grid -> writers (NIfTI, DICOM SEG, label map, overlay), and the 2D ultrasound frame
loop.

``kidneyseg.api`` (the local batch) and ``kidneyseg.engines`` (Ray workers) both call
:func:`process_case`; pipelines know nothing of files or folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InputError
from .io import AtomicOutputs, Image, check_volume, mask_to_nifti, read_image

if TYPE_CHECKING:  # the ultrasound pipeline imports torch: only its frame loop loads it, not `import kidneyseg`
    from .pipelines.us_ensemble import USResult
    from .preprocess.ultrasound import USFrame


class StopRun(Exception):
    """A problem that stops the whole run (a bad model folder), not just one case."""


def volume_caption(volumes_ml: dict[str, float]) -> str:
    """``"R 180 mL, L 175 mL"`` (or ``"kidney 150 mL"`` for a single-kidney label map)."""
    short = {"kidney_right_ml": "R", "kidney_left_ml": "L"}
    return ", ".join(f"{short.get(k, k[:-3])} {v:.0f} mL" for k, v in volumes_ml.items() if k != "total_ml")


def qc_caption(qc: dict[str, object]) -> str:
    """``"  [CHECK: low_confidence, volume_outside_validated_range]"`` for the raised domain and
    geometry flags of a result, ``""`` when none is raised (shown on the overlay and report)."""
    raised = [k for k in ("empty", "low_confidence", "volume_outside_validated_range", "laterality_conflict")
              if qc.get(k) is True]
    return f"  [CHECK: {', '.join(raised)}]" if raised else ""


@dataclass
class SegmentSummary:
    """Outcome of :func:`segment_files`: volume rows of finished cases, ``(case, message)``
    of failed ones, and (``resume``) the cases an earlier run had finished."""

    rows: list[dict] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


OUTPUT_TYPES = ("nifti", "dicom-seg", "both")


def case_outputs(out_dir: Path, case: str, overlay: bool = True, output_type: str = "nifti") -> dict[str, Path]:
    """Output paths of one case: ``<case>_seg.nii.gz`` and/or ``<case>_seg.dcm`` (DICOM
    SEG), ``<case>_labels.json``, ``<case>_run.json`` (provenance: :mod:`kidneyseg.provenance`)
    and ``<case>_overlay.png``."""
    paths = {"labels": out_dir / f"{case}_labels.json", "run": out_dir / f"{case}_run.json"}
    if output_type in ("nifti", "both"):
        paths["seg"] = out_dir / f"{case}_seg.nii.gz"
    if output_type in ("dicom-seg", "both"):
        paths["dicom_seg"] = out_dir / f"{case}_seg.dcm"
    if overlay:
        paths["overlay"] = out_dir / f"{case}_overlay.png"
    return paths


@dataclass(frozen=True)
class CaseOptions:
    """What to write for each case (shared by the local loop and the Ray workers)."""

    out: Path
    overlay: bool = True
    output_type: str = "nifti"
    series: str | None = None
    report: bool = False
    run: dict | None = None  # kidneyseg.provenance.run_record of this command (None: the pipeline's name only)


def process_case(pipe_or_loader, f: Path, case: str, opts: CaseOptions, secondary: Image | None = None):
    """Read, segment and write one case; outputs are staged and renamed together.

    Args:
        pipe_or_loader: a loaded pipeline, or a callable returning one (called only once the
            input has been read, so bad input fails before a model is loaded).

    Returns:
        ``(row, output_paths, picture, input_sha256)``: the volume row, the files written, the
        three-plane picture (a data URI) with ``opts.report``, else ``None``, and the input's
        SHA-256 as recorded in ``<case>_run.json`` (the batch status reuses it).

    Raises:
        InputError: this case cannot be done (the batch goes on).
        StopRun: the model cannot be loaded (the batch stops).
    """
    from .io.readers import dicom_folder

    if not f.exists():
        raise InputError(f"{f}: no such file or folder")
    with dicom_folder(f) as src:  # a zip of DICOM files is extracted for the time of this case
        return _process_source(pipe_or_loader, src, f, case, opts, secondary)


def _process_source(pipe_or_loader, f: Path, original: Path, case: str, opts: CaseOptions, secondary: Image | None):
    from .report import overlay_montage

    out = opts.out
    if opts.output_type != "nifti" and not f.is_dir():
        raise InputError(f"{original}: --output-type {opts.output_type} needs a DICOM series folder (or zip) as input "
                         "(a SEG references its source images)")
    uid = None
    if f.is_dir():
        from .io.readers import resolve_series

        try:
            uid = resolve_series(f, opts.series)
        except InputError as exc:
            raise InputError(str(exc).replace(str(f), str(original))) from None
    image = check_volume(read_image(f, dtype=np.float32, series_uid=uid))
    if callable(pipe_or_loader):
        try:
            pipe = pipe_or_loader()
        except InputError as exc:
            raise StopRun(str(exc)) from None
    else:
        pipe = pipe_or_loader
    result = pipe.segment(image) if secondary is None else pipe.segment(image, secondary=secondary)
    result.case = case
    paths = case_outputs(out, case, opts.overlay, opts.output_type)
    try:
        with AtomicOutputs(overwrite=True) as outs:
            if "seg" in paths:
                mask_to_nifti(result.mask.array, image).to_filename(str(outs.stage(paths["seg"])))
            if "dicom_seg" in paths:
                from .io.dicom_seg import write_dicom_seg

                from . import __version__

                write_dicom_seg(result.mask, result.label_map, f, outs.stage(paths["dicom_seg"]), series_uid=uid,
                                algorithm_name=f"kidneyseg {getattr(pipe, 'name', 'pipeline')}",
                                algorithm_version=__version__)
            outs.stage(paths["labels"]).write_text(
                json.dumps({str(k): v for k, v in result.label_map.items()}, indent=2) + "\n")
            from .provenance import case_record, run_record

            run = opts.run if opts.run is not None else run_record(getattr(pipe, "name", "pipeline"), None, {})
            record = case_record(run, case, original, [p.name for p in paths.values()])
            digest = record["input"]["sha256"]
            outs.stage(paths["run"]).write_text(json.dumps(record, indent=2) + "\n")
            if opts.overlay:
                overlay_montage(image, result.mask, result.label_map, outs.stage(paths["overlay"]),
                                title=f"{case}: " + volume_caption(result.volumes_ml) + qc_caption(result.qc))
    except OSError as exc:
        raise InputError(f"{out}: cannot write the outputs of {case} ({exc.strerror or exc})") from None
    picture = None
    if opts.report:
        from .report.html import three_planes

        picture = three_planes(image, result.mask, result.label_map,
                               f"{case}: " + volume_caption(result.volumes_ml) + qc_caption(result.qc))
    return result.row(), list(paths.values()), picture, digest


def write_us_outputs(result: USResult, frame: USFrame, out_dir: Path, overlay: bool = True) -> dict[str, Path]:
    """Write ``<case>_seg.png`` (``uint8``, 0/1, the input's size), ``<case>_labels.json``
    and ``<case>_overlay.png`` atomically (all or none)."""
    from PIL import Image as PILImage

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
        :class:`SegmentSummary`.
    """
    from .io import case_name
    from .preprocess.ultrasound import read_us_frame
    from .report import write_volume_tables

    if not overwrite:
        targets = [out / "areas.csv", out / "areas.json"]
        for f in files:
            c = case_name(f)
            targets += [out / f"{c}_seg.png", out / f"{c}_labels.json"] + ([out / f"{c}_overlay.png"] if overlay else [])
        existing = [t for t in targets if t.exists()]
        if existing:
            raise InputError(f"{existing[0]}: output exists (use --overwrite to replace it)")
    from .pipelines.us_ensemble import USEnsemblePipeline

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


__all__ = ["OUTPUT_TYPES", "CaseOptions", "SegmentSummary", "StopRun", "case_outputs", "overlay_png", "process_case",
           "qc_caption", "segment_us_files", "volume_caption", "write_us_outputs"]
