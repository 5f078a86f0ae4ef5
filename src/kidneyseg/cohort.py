"""A ``kidneyseg segment`` run over files, folders or a manifest: expanding the inputs,
locking the output folder, the local case loop with its status table (resume), the Ray
engine, the volume tables and the report. One case is :func:`kidneyseg.runner.process_case`;
:func:`kidneyseg.api.segment_files` and the command line build a
:class:`~kidneyseg.runner.SegmentRequest` and call :func:`run_segment`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import InputError
from .io import AtomicOutputs, Image, case_name, check_volume, read_image
from .io.writers import remove_stale_staged, signals_deferred
from .pipelines import PIPELINES, model_folders
from .runner import (CaseOptions, PipelineLoader, SegmentRequest, SegmentSummary, StopRun, case_outputs, frame_outputs, process_case,
                     process_frame)

log = logging.getLogger(__name__)


US_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def expand_inputs(inputs: list[str | Path], modality: str = "MR") -> list[Path]:
    """Files stay; a folder becomes its NIfTI files (sorted) or, with none, itself as a
    DICOM series folder. For ``modality="US"`` a folder becomes its PNG, JPEG and DICOM
    files (2D frames).

    Raises:
        InputError: a path does not exist, or two inputs share a case name.
    """
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_file() and p.suffix.lower() == ".zip" and modality != "US":
            out.append(p)  # a zip of one or more DICOM series
        elif p.is_dir() and modality == "US":
            frames = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in US_SUFFIXES)
            if not frames:
                raise InputError(f"{p}: no PNG, JPEG or DICOM frames in this folder")
            out.extend(frames)
        elif p.is_dir():
            nifti = sorted(q for q in p.iterdir() if q.name.lower().endswith((".nii", ".nii.gz")))
            out.extend(nifti if nifti else [p])
        else:
            out.append(p)
    names: dict[str, Path] = {}
    for p in out:
        n = case_name(p)
        if n in names:
            raise InputError(f"{p}: case name {n!r} also used by {names[n]}; outputs would collide")
        names[n] = p
    return out


def _drop_own_outputs(files: list[Path], out_dir: Path) -> list[Path]:
    """Leave out masks this command wrote earlier into the same folder: ``<case>_seg.nii.gz``
    (or ``.dcm``, ``_seg.png``) in ``out_dir`` beside an input named ``<case>`` (``segment d -o d``
    run twice must not segment its own masks)."""
    try:
        out = out_dir.resolve()
    except OSError:
        return files
    cases = {case_name(f) for f in files}
    own = {f"{c}_seg{ext}" for c in cases for ext in (".nii.gz", ".dcm", ".png")}
    return [f for f in files if not (f.name in own and f.parent.resolve() == out)]


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Hold an exclusive lock on the output folder for one ``segment`` run (``fcntl.flock`` on
    the folder itself, so nothing is left in it). A second run into the same folder while the
    first is writing is refused: both would rewrite ``volumes.csv`` and one's rows would be lost.

    Raises:
        InputError: another run holds the folder.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (documented in the README)
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{out_dir}: another kidneyseg run is writing into this folder; wait for it to finish "
                             "or choose another -o") from None
        stale = remove_stale_staged(out_dir)
        if stale:
            log.info("%s: removed %d temporary file(s) left by an interrupted run", out_dir, len(stale))
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output path exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with signals_deferred():  # the probe never outlives an interrupt
            fd, probe = tempfile.mkstemp(prefix=".kidneyseg-probe-", dir=out_dir)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None


def run_segment(request: SegmentRequest) -> SegmentSummary:
    """Run one :class:`kidneyseg.runner.SegmentRequest` (what :func:`segment_files` and
    ``kidneyseg segment`` do; see :func:`segment_files` for the outputs).

    Raises:
        InputError: as :func:`segment_files`.
    """
    if request.threads > 0:
        from .inference.cpu import set_cpu_threads

        set_cpu_threads(request.threads)
    request.check()
    modality = PIPELINES[request.pipeline].modality
    case_names = None
    if request.manifest is not None:
        from .batch import read_manifest

        if request.inputs:
            raise InputError("--manifest: give either input paths or a manifest, not both")
        items = read_manifest(request.manifest)
        case_names = [c for c, _ in items]
        files = [f for _, f in items]
        request = dataclasses.replace(request, resume=True)
    else:
        if not request.inputs:
            raise InputError("segment: no input paths (give files, folders, or --manifest)")
        files = _drop_own_outputs(expand_inputs(list(request.inputs), modality), request.out_dir)
    sec_image = None
    if request.secondary is not None:
        if len(files) != 1:
            raise InputError(f"--secondary: expected exactly one input image, got {len(files)}")
        sec_image = check_volume(read_image(request.secondary, dtype=np.float32), "secondary image")
    out = request.out_dir
    created = not out.exists()
    _check_output_dir(out)
    try:
        with output_lock(out):
            return _segment_into(files, case_names, sec_image, request)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave no trace


def _segment_into(files: list[Path], cases: list[str] | None, secondary: Image | None,
                  request: SegmentRequest) -> SegmentSummary:
    """Segment ``files`` (named ``cases``, default their file names) into ``request.out_dir``.

    With ``request.resume`` (cohort batches), the status table of :mod:`kidneyseg.batch` is
    kept: cases finished by an earlier run with unchanged outputs are skipped, outputs of
    other cases are replaced, and the status and volume tables are rewritten after every case.
    ``request.engine == "ray"`` runs the cases on a Ray cluster (:mod:`kidneyseg.engines`).
    """
    import time

    from .batch import BatchStatus
    from .report import write_volume_tables

    out, name, resume, overwrite, report = (request.out_dir, request.pipeline, request.resume, request.overwrite,
                                            request.report)
    volumetric = PIPELINES[name].volumetric  # else 2D ultrasound frames: PNG masks, areas.csv
    table = "volumes" if volumetric else "areas"
    names = cases if cases is not None else [case_name(f) for f in files]
    if not overwrite and not resume:
        targets = [out / f"{table}.csv", out / f"{table}.json"]
        for c in names:
            paths = (case_outputs(out, c, request.overlay, request.output_type, request.save_probabilities)
                     if volumetric else frame_outputs(out, c, request.overlay))
            targets += list(paths.values())
        existing = [t for t in targets if t.exists()]
        if existing:
            raise InputError(f"{existing[0]}: output exists (use --overwrite to replace it)")
    status = BatchStatus.load(out) if resume else None
    if report and not overwrite and not resume and (out / "report.html").exists():
        raise InputError(f"{out / 'report.html'}: output exists (use --overwrite to replace it)")
    from .provenance import run_record

    run = run_record(name, model_folders(name, request.model), request.inference_options())
    if status is not None:  # a resumed case counts as done only under the same settings
        status.settings = {"pipeline": name, "model_sha256": run["model"]["sha256"],
                           **{k: v for k, v in run["options"].items() if k != "device"}}
    opts = CaseOptions(out, request.overlay, request.output_type, request.series, report, run,
                       request.save_probabilities, request.pixel_spacing_mm, volume=request.volume)
    process = process_case if volumetric else process_frame
    pictures: dict[str, str] = {}
    summary = SegmentSummary()
    todo = []
    for f, case in zip(files, names):
        if status is not None and status.is_done(case, f):
            summary.skipped.append(case)
        else:
            todo.append((f, case))

    def record(f: Path, case: str, outcome, seconds: float) -> None:
        if isinstance(outcome, Exception):
            summary.failures.append((case, str(outcome)))
            if status is not None:
                status.failed(case, f, str(outcome), seconds)
        else:
            row, paths, picture, digest = outcome
            summary.rows.append(row)
            if picture:
                pictures[case] = picture
            if status is not None:
                status.done(case, f, paths, row, seconds, digest)
        if status is not None:
            try:
                status.save(names)
            except OSError as exc:  # e.g. a full disk: the finished cases' outputs stay; say so and stop
                raise InputError(f"{out}: cannot write status.csv/status.json after {case} "
                                 f"({exc.strerror or exc}); finished cases keep their outputs") from None

    if request.engine == "ray":
        from .engines import run_on_ray

        run_on_ray(todo, opts, request, secondary, record)
    else:
        loader = PipelineLoader(request.load_pipeline)
        bar_off = True if not request.progress or len(todo) < 2 else None
        if request.progress and len(todo) == 1:
            opts = dataclasses.replace(opts, progress_bar=True)
        for f, case in tqdm(todo, desc="segment", disable=bar_off, unit="case"):
            t0 = time.perf_counter()
            try:
                outcome = process(loader, f, case, opts, secondary)
            except StopRun as exc:
                raise InputError(str(exc)) from None
            except InputError as exc:
                outcome = exc
            record(f, case, outcome, time.perf_counter() - t0)
    summary.rows.sort(key=lambda r: names.index(r["case"]) if r["case"] in names else len(names))
    if status is None and summary.rows:
        try:
            write_volume_tables(summary.rows, out, overwrite=True, stem=table)
        except OSError as exc:
            raise InputError(f"{out}: cannot write {table}.csv/{table}.json ({exc.strerror or exc})") from None
    if report:
        from .report.html import segment_report

        rows = status.volume_rows(names) if status is not None else summary.rows
        with AtomicOutputs(overwrite=True) as outs:
            outs.stage(out / "report.html").write_text(segment_report(rows, pictures, summary.failures), encoding="utf-8")
    return summary


__all__ = ["expand_inputs", "output_lock", "run_segment"]
