"""The per-case path every segmenting entry point shares: read -> check -> pipeline -> back to
the input grid -> writers (NIfTI, DICOM SEG, label map, overlay), and its 2D counterpart for
ultrasound frames (:func:`process_frame`).

``kidneyseg.api`` (the local batch) and ``kidneyseg.engines`` (Ray workers) both call
:func:`process_case`; pipelines know nothing of files or folders.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .io import AtomicOutputs, Image, check_volume, mask_to_nifti, read_image
from .pipelines import DEFAULT_PIPELINE

log = logging.getLogger(__name__)

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
    geometry flags of a result, ``""`` when none is raised, then ``"  (mr_multiprotocol_kidney:
    coronal acquisition)"`` when the pipeline chose the model per scan (shown on the overlay and
    report)."""
    raised = [k for k in ("empty", "low_confidence", "volume_outside_validated_range", "laterality_conflict")
              if qc.get(k) is True]
    text = f"  [CHECK: {', '.join(raised)}]" if raised else ""
    return text + (f"  ({qc['model']}: {qc['route']})" if "route" in qc else "")


@dataclass
class SegmentSummary:
    """Outcome of :func:`segment_files`: volume rows of finished cases, ``(case, message)``
    of failed ones, and (``resume``) the cases an earlier run had finished."""

    rows: list[dict] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


OUTPUT_TYPES = ("nifti", "dicom-seg", "both", "rtstruct")


@dataclass
class CaseWrite:
    """What a case writer gets: the case name, the image as read (its grid is the output's),
    the pipeline's result, the input path (``source``: a DICOM folder, possibly extracted from
    ``original``), the DICOM series UID and image set read, the pipeline's name and the provenance record."""

    case: str
    image: Image
    result: object
    source: Path
    original: Path
    series_uid: str | None
    pipeline: str
    record: dict
    volume: int | None = None

    @property
    def algorithm(self) -> str:
        """``kidneyseg <pipeline>``, and the model it used when the pipeline picks one per scan
        (DICOM SEG AlgorithmName, RTSTRUCT description)."""
        used = self.record.get("model", {}).get("used")
        return f"kidneyseg {self.pipeline}" + (f" {used}" if used else "")


def _write_nifti(w: CaseWrite, path: Path) -> None:
    mask_to_nifti(w.result.mask.array, w.image).to_filename(str(path))


def _write_dicom_seg(w: CaseWrite, path: Path) -> None:
    from . import __version__
    from .io.dicom_seg import write_dicom_seg

    write_dicom_seg(w.result.mask, w.result.label_map, w.source, path, series_uid=w.series_uid, volume=w.volume,
                    algorithm_name=w.algorithm, algorithm_version=__version__)


def _write_rtstruct(w: CaseWrite, path: Path) -> None:
    from .io.rtstruct import write_rtstruct

    write_rtstruct(w.result.mask, w.result.label_map, w.source, path, series_uid=w.series_uid, volume=w.volume,
                   description=w.algorithm)


def _label_map_json(label_map: dict[int, str]) -> str:
    return json.dumps({str(k): v for k, v in label_map.items()}, indent=2) + "\n"


def _write_labels(w: CaseWrite, path: Path) -> None:
    path.write_text(_label_map_json(w.result.label_map))


def _write_slicer_colours(w: CaseWrite, path: Path) -> None:
    from .labels import slicer_colour_table

    path.write_text(slicer_colour_table(w.result.label_map))


def _write_itksnap_labels(w: CaseWrite, path: Path) -> None:
    from .labels import itksnap_label_descriptions

    path.write_text(itksnap_label_descriptions(w.result.label_map))


def _write_probability(w: CaseWrite, path: Path) -> None:
    from .io.writers import probability_to_nifti

    if w.result.probability is None:
        raise InputError(f"--save-probabilities: pipeline {w.pipeline} returned no probability map")
    probability_to_nifti(w.result.probability, w.image).to_filename(str(path))


def _write_run(w: CaseWrite, path: Path) -> None:
    path.write_text(json.dumps(w.record, indent=2) + "\n")


def _write_overlay(w: CaseWrite, path: Path) -> None:
    from .report import overlay_montage

    overlay_montage(w.image, w.result.mask, w.result.label_map, path,
                    title=f"{w.case}: " + volume_caption(w.result.volumes_ml) + qc_caption(w.result.qc))


CASE_WRITERS: dict[str, tuple[str, object]] = {
    "labels": ("{case}_labels.json", _write_labels),
    "run": ("{case}_run.json", _write_run),
    "seg": ("{case}_seg.nii.gz", _write_nifti),
    "slicer_colours": ("{case}_seg.ctbl", _write_slicer_colours),
    "itksnap_labels": ("{case}_seg.itksnap.txt", _write_itksnap_labels),
    "dicom_seg": ("{case}_seg.dcm", _write_dicom_seg),
    "rtstruct": ("{case}_rtstruct.dcm", _write_rtstruct),
    "probability": ("{case}_prob.nii.gz", _write_probability),
    "overlay": ("{case}_overlay.png", _write_overlay),
}
"""The writers of one 3D case: output kind -> (file name pattern, ``writer(CaseWrite, path)``).
:func:`case_outputs` picks the kinds a run asks for; :func:`process_case` stages every file and
renames them together."""


def case_outputs(out_dir: Path, case: str, overlay: bool = True, output_type: str = "nifti",
                 save_probabilities: bool = False) -> dict[str, Path]:
    """Output paths of one case, by kind of :data:`CASE_WRITERS`: ``<case>_seg.nii.gz`` with
    its 3D Slicer colour table ``<case>_seg.ctbl`` and ITK-SNAP label descriptions
    ``<case>_seg.itksnap.txt`` (names and colours of the labels), and/or ``<case>_seg.dcm``
    (DICOM SEG), or ``<case>_rtstruct.dcm`` (RT Structure Set), ``<case>_labels.json``, ``<case>_run.json`` (provenance:
    :mod:`kidneyseg.provenance`), ``<case>_overlay.png`` and, with ``save_probabilities``,
    ``<case>_prob.nii.gz``."""
    kinds = ["labels", "run"]
    if output_type in ("nifti", "both"):
        kinds += ["seg", "slicer_colours", "itksnap_labels"]
    if output_type in ("dicom-seg", "both"):
        kinds.append("dicom_seg")
    if output_type == "rtstruct":
        kinds.append("rtstruct")
    if save_probabilities:
        kinds.append("probability")
    if overlay:
        kinds.append("overlay")
    return {k: out_dir / CASE_WRITERS[k][0].format(case=case) for k in kinds}


@dataclass(frozen=True)
class SegmentRequest:
    """Everything one ``kidneyseg segment`` run is asked to do: the command line's options and
    the keyword arguments of :func:`kidneyseg.api.segment_files`, in one value that the local
    batch (volumes and ultrasound frames alike) and the Ray workers read.

    Attributes:
        out_dir: output folder.
        inputs: files and folders (NIfTI, DICOM series folders or zips, PAR/REC, 2D frames).
        manifest: a cohort CSV (``path``, optional ``case``) instead of ``inputs``.
        pipeline: registered pipeline name (:data:`kidneyseg.pipelines.PIPELINES`).
        model: model folder; ``None`` = the pipeline's shipped model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (see
            :func:`kidneyseg.inference.resolve_device`).
        overwrite: replace existing outputs.
        overlay: write ``<case>_overlay.png``.
        keep_largest: keep the largest component per kidney (``--keep-all-components`` = False).
        progress: progress bar for cohorts on a terminal.
        threads: torch intra-op threads and SimpleITK's threads (0 = their defaults).
        secondary: second sequence of the same exam (``unsupervised-cluster``, ``em-unet3d``).
        pixel_spacing_mm: 2D frames without a spacing of their own (``us-ensemble``).
        output_type: one of :data:`OUTPUT_TYPES`.
        series: DICOM series choice (UID, ``"largest"``, ``"description:TEXT"``).
        volume: 1-based volume of a 4D NIfTI input, or image set of a DICOM series holding
            several images per slice position (:func:`kidneyseg.io.read_image`); ``None``:
            4D files are refused, multi-echo series give the magnitude of the first echo.
        resume: keep ``status.csv`` and skip cases already done under the same settings.
        report: write ``report.html``.
        engine: ``"local"`` or ``"ray"``; ``address`` and ``workers`` for Ray.
        tta: the model's test-time augmentation (``--no-tta`` = False).
        allow_ct: let CT-looking input through an MR pipeline.
        save_probabilities: also write ``<case>_prob.nii.gz``, the kidney probability
            (float32, 0-1) on the input's grid (pipelines whose spec has ``probabilities``).
        preset: a named set of the pipeline's settings (``PipelineSpec.presets``, e.g.
            ``paper`` for ``unsupervised-cluster``).
    """

    out_dir: Path
    inputs: tuple = ()
    manifest: Path | None = None
    pipeline: str = DEFAULT_PIPELINE
    model: str | None = None
    device: str = "auto"
    overwrite: bool = False
    overlay: bool = True
    keep_largest: bool = True
    progress: bool = True
    threads: int = 0
    secondary: Path | None = None
    pixel_spacing_mm: float | None = None
    output_type: str = "nifti"
    series: str | None = None
    volume: int | None = None
    resume: bool = False
    report: bool = False
    engine: str = "local"
    address: str | None = None
    workers: int = 2
    tta: bool = True
    allow_ct: bool = False
    save_probabilities: bool = False
    preset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "inputs", tuple(self.inputs or ()))
        for name in ("manifest", "secondary"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.model is not None:
            object.__setattr__(self, "model", str(self.model))

    def check(self) -> None:
        """Refuse a value no run can use, or an option this pipeline would not act on, before
        anything is read or loaded.

        Raises:
            InputError: one line naming the option (exit 2).
        """
        from .pipelines import check_segment_options

        if self.engine not in ("local", "ray"):
            raise InputError(f"--engine: expected local or ray, got {self.engine!r}")
        if self.volume is not None and (isinstance(self.volume, bool) or not isinstance(self.volume, int)
                                        or self.volume < 1):
            raise InputError(f"--volume: expected a whole number from 1, got {self.volume!r}")
        if self.output_type not in OUTPUT_TYPES:
            raise InputError(f"--output-type: expected one of {', '.join(OUTPUT_TYPES)}, got {self.output_type!r}")
        check_segment_options(self.pipeline, tta=self.tta, keep_largest=self.keep_largest,
                              secondary=self.secondary is not None, allow_ct=self.allow_ct, report=self.report,
                              resume=self.resume, engine=self.engine, series=self.series, volume=self.volume,
                              output_type=self.output_type, manifest=self.manifest is not None,
                              pixel_spacing=self.pixel_spacing_mm is not None,
                              save_probabilities=self.save_probabilities, preset=self.preset)

    def load_pipeline(self):
        """The pipeline with this request's model, device and options applied.

        Raises:
            InputError: unknown pipeline or unusable model folder.
        """
        from .pipelines import configure_pipeline, get_pipeline

        return configure_pipeline(get_pipeline(self.pipeline, model=self.model, device=self.device, preset=self.preset),
                                  self.keep_largest, self.tta, self.allow_ct)

    def inference_options(self) -> dict:
        """The options recorded in the provenance (``<case>_run.json``) and, without
        ``device``, the settings a resumed case must share to count as done."""
        return {"tta": self.tta, "keep_largest": self.keep_largest, "allow_ct": self.allow_ct, "device": self.device,
                "output_type": self.output_type, "secondary": self.secondary is not None,
                "save_probabilities": self.save_probabilities,
                **({"preset": self.preset} if self.preset else {}),
                **({"volume": self.volume} if self.volume is not None else {})}  # absent by default: older runs resume


@dataclass(frozen=True)
class CaseOptions:
    """What to write for each case (shared by the local loop and the Ray workers)."""

    out: Path
    overlay: bool = True
    output_type: str = "nifti"
    series: str | None = None
    report: bool = False
    run: dict | None = None
    save_probabilities: bool = False
    pixel_spacing_mm: float | None = None  # 2D frames without a spacing of their own
    progress_bar: bool = False  # a bar over the stages of a single case on a terminal (kidneyseg.progress)
    volume: int | None = None  # 4D NIfTI volume / DICOM image set (kidneyseg.io.read_image)


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
    from .progress import CaseProgress

    if not f.exists():
        raise InputError(f"{f}: no such file or folder")
    with CaseProgress(case, opts.progress_bar) as progress, dicom_folder(f) as src:
        # a zip of DICOM files is extracted for the time of this case
        return _process_source(pipe_or_loader, src, f, case, opts, secondary, progress)


def _process_source(pipe_or_loader, f: Path, original: Path, case: str, opts: CaseOptions, secondary: Image | None,
                    progress):
    out = opts.out
    progress.stage("read", str(original))
    if opts.output_type != "nifti" and not f.is_dir():
        raise InputError(f"{original}: --output-type {opts.output_type} needs a DICOM series folder (or zip) as input "
                         "(a SEG references its source images)")
    uid = image_set = None
    if f.is_dir() or f.suffix.lower() == ".dcm":  # a series folder, or one file of a series: read as its series
        from .io.readers import dicom_file_series, dicom_image_set

        try:
            folder, rule = (f, opts.series) if f.is_dir() else (f.parent, dicom_file_series(f))
            uid, image_set = dicom_image_set(folder, rule, opts.volume)
        except InputError as exc:
            raise InputError(str(exc).replace(str(f), str(original))) from None
        if image_set.count > 1 and opts.volume is None:
            log.warning("warning: %s: the series holds %d images at each slice position; segmenting %s (choose "
                        "another with --volume N)", original, image_set.count, image_set.describe())
    elif opts.volume is not None:
        image_set = opts.volume
    try:
        if uid is not None:  # the image set chosen above, read without a second look at the folder
            from .io.readers import read_dicom_image_set

            image = check_volume(read_dicom_image_set(folder, image_set, np.float32))
        else:
            image = check_volume(read_image(f, dtype=np.float32, volume=opts.volume))
    except InputError as exc:  # a zip or an export tree is read from a temporary folder: name the input
        raise InputError(str(exc).replace(str(f), str(original))) from None
    if opts.output_type != "nifti":
        import pydicom

        from .io.dicom_seg import check_source_datasets

        check_source_datasets([pydicom.dcmread(p, stop_before_pixels=True) for p in image_set.files],
                              image_set.files, original)
    if callable(pipe_or_loader) and getattr(pipe_or_loader, "pipeline", None) is None:
        progress.stage("load model")
    pipe = _loaded(pipe_or_loader)
    name = getattr(pipe, "name", "pipeline")
    progress.stage("segment", f"{name}, {' x '.join(map(str, image.shape))} voxels")
    result = pipe.segment(image) if secondary is None else pipe.segment(image, secondary=secondary)
    result.case = case
    paths = case_outputs(out, case, opts.overlay, opts.output_type, opts.save_probabilities)
    progress.stage("write", f"{len(paths)} files to {out}")
    from .provenance import case_record, run_record

    run = opts.run if opts.run is not None else run_record(name, None, {})
    try:
        record = case_record(run, case, original, [p.name for p in paths.values()])  # hashes the input
        if image_set is not None:  # which volume of a multi-volume input was segmented
            record["input"]["volume"] = (image_set if isinstance(image_set, int) else
                                         {"index": image_set.index, "of": image_set.count, **image_set.attributes})
        if "route" in result.qc:  # a pipeline that picks its model per scan (mr-auto) says which one, and why
            record["model"] = {**record["model"], "used": result.qc["model"], "route": result.qc["route"]}
        job = CaseWrite(case, image, result, f, original, uid, name, record, opts.volume)
        with AtomicOutputs(overwrite=True) as outs:
            for kind, path in paths.items():
                CASE_WRITERS[kind][1](job, outs.stage(path))
    except OSError as exc:
        raise InputError(f"{out}: cannot write the outputs of {case} ({exc.strerror or exc})") from None
    picture = None
    if opts.report:
        from .report.html import three_planes

        picture = three_planes(image, result.mask, result.label_map,
                               f"{case}: " + volume_caption(result.volumes_ml) + qc_caption(result.qc))
    return result.row(), list(paths.values()), picture, record["input"]["sha256"]


def write_us_outputs(result: USResult, frame: USFrame, out_dir: Path, overlay: bool = True) -> dict[str, Path]:
    """Write ``<case>_seg.png`` (``uint8``, 0/1, the input's size), ``<case>_labels.json``
    and ``<case>_overlay.png`` atomically (all or none)."""
    from PIL import Image as PILImage

    paths = frame_outputs(out_dir, result.case, overlay)
    with AtomicOutputs(overwrite=True) as outs:
        PILImage.fromarray(result.mask).save(outs.stage(paths["seg"]), format="PNG")
        outs.stage(paths["labels"]).write_text(_label_map_json(result.label_map))
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


def frame_outputs(out_dir: Path, case: str, overlay: bool = True) -> dict[str, Path]:
    """Output paths of one 2D ultrasound frame: ``<case>_seg.png``, ``<case>_labels.json`` and
    ``<case>_overlay.png``."""
    paths = {"seg": out_dir / f"{case}_seg.png", "labels": out_dir / f"{case}_labels.json"}
    if overlay:
        paths["overlay"] = out_dir / f"{case}_overlay.png"
    return paths


def process_frame(pipe_or_loader, f: Path, case: str, opts: CaseOptions, secondary=None):
    """Read, segment and write one 2D ultrasound frame (the 2D counterpart of
    :func:`process_case`, same arguments and return value; no picture, no provenance digest).

    Raises:
        InputError: this frame cannot be done (the run goes on).
        StopRun: the model cannot be loaded (the run stops).
    """
    from .preprocess.ultrasound import read_us_frame

    frame = read_us_frame(f, opts.pixel_spacing_mm)
    pipe = _loaded(pipe_or_loader)
    result = pipe.segment(frame, case)
    try:
        paths = write_us_outputs(result, frame, opts.out, opts.overlay)
    except OSError as exc:
        raise InputError(f"{opts.out}: cannot write the outputs of {case} ({exc.strerror or exc})") from None
    return result.row(), list(paths.values()), None, None


class PipelineLoader:
    """Loads a pipeline on its first call and returns the same one after that; the case loop
    and each Ray worker call it only once an input has been read, so bad input fails before a
    model is loaded.

    Args:
        load: returns the pipeline (e.g. :meth:`SegmentRequest.load_pipeline`).
    """

    def __init__(self, load):
        self._load = load
        self.pipeline = None

    def __call__(self):
        if self.pipeline is None:
            self.pipeline = self._load()
        return self.pipeline


def _loaded(pipe_or_loader):
    """The pipeline, loading it through the loader on first use (a failure stops the run)."""
    if not callable(pipe_or_loader):
        return pipe_or_loader
    try:
        return pipe_or_loader()
    except InputError as exc:
        raise StopRun(str(exc)) from None


__all__ = ["CASE_WRITERS", "OUTPUT_TYPES", "CaseOptions", "CaseWrite", "PipelineLoader", "SegmentRequest", "SegmentSummary", "StopRun", "case_outputs", "overlay_png", "process_case",
           "frame_outputs", "process_frame", "qc_caption", "volume_caption", "write_us_outputs"]
