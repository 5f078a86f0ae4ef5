"""Python API; the command line is a thin layer over these functions.

>>> import kidneyseg
>>> result = kidneyseg.segment("image_39.nii.gz")          # doctest: +SKIP
>>> result.volumes_ml["kidney_left_ml"], result.qc["kidney_count"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import Image, check_volume, read_image
from .pipelines import (PIPELINES, Result, check_segment_options, configure_pipeline, default_pipeline,
                        get_pipeline)
from .cohort import expand_inputs, output_lock, run_segment
from .runner import SegmentRequest, SegmentSummary

if TYPE_CHECKING:
    from .pipelines.us_ensemble import USResult
    from .planning import Plan

log = logging.getLogger(__name__)


def segment(image: Image | str | Path, pipeline: str | None = None, model: str | Path | None = None,
            device: str = "auto", keep_largest: bool = True, secondary: Image | str | Path | None = None,
            pixel_spacing_mm: float | None = None, tta: bool = True, allow_ct: bool = False) -> "Result | USResult":
    """Segment one image.

    Args:
        image: a path (NIfTI, DICOM folder, PAR/REC), an :class:`~kidneyseg.io.Image`, a nibabel
            or SimpleITK image, or ``(array, affine)`` (:func:`kidneyseg.io.convert.as_image`); for
            the ultrasound pipeline (``us-ensemble``) a 2D frame: a PNG/JPEG/DICOM path, a
            :class:`~kidneyseg.preprocess.ultrasound.USFrame` or a ``float32`` ``(H, W)``
            array in [0, 1].
        pipeline: registered pipeline name (``kidneyseg list-models``); ``None``:
            :func:`kidneyseg.pipelines.default_pipeline` (``mr-auto``, or ``mr-t2-unet`` with a
            ``model``).
        model: local model folder; ``None`` for the pipeline's shipped model.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        keep_largest: keep only the largest component per kidney.
        secondary: a second sequence of the same exam (``unsupervised-cluster`` only); it is
            registered to ``image`` and fused as a channel.
        pixel_spacing_mm: ultrasound only: pixel spacing in mm, for the area in mm^2 (a
            DICOM frame's own spacing is used when this is ``None``).
        tta: ``False`` for one plain network pass instead of the model's test-time
            augmentation (its ``inference.json``); faster, slightly less accurate.
        allow_ct: segment an image that looks like CT with an MR pipeline anyway (refused
            by default: DICOM Modality CT or Hounsfield-unit intensities).

    Returns:
        :class:`~kidneyseg.pipelines.Result` (mask on the input grid, volumes in mL, QC flags),
        or for ultrasound a :class:`~kidneyseg.pipelines.us_ensemble.USResult` (mask
        ``(H, W)``, area in mm^2).

    Raises:
        InputError: unreadable or unsuitable input, unknown pipeline, bad model folder, a
            secondary image for a pipeline that takes none, failed registration.
    """
    pipeline = pipeline or default_pipeline(model)
    check_segment_options(pipeline, tta=tta, keep_largest=keep_largest, secondary=secondary is not None,
                          allow_ct=allow_ct, pixel_spacing=pixel_spacing_mm is not None)
    if PIPELINES[pipeline].modality == "US":
        return _segment_us(image, pipeline, model, device, keep_largest, pixel_spacing_mm)
    from .io.convert import as_image

    img = as_image(image)  # unsupported input fails before the model is loaded
    sec = None if secondary is None else as_image(secondary)
    pipe = configure_pipeline(get_pipeline(pipeline, model=None if model is None else str(model), device=device),
                              keep_largest, tta, allow_ct)
    return pipe.segment(img) if sec is None else pipe.segment(img, secondary=sec)


class Segmenter:
    """A pipeline loaded once, for many images (``kidneyseg.segment`` reloads it on every call).

    Example::

        seg = kidneyseg.Segmenter()                        # the shipped MR models (mr-auto), loaded once
        for path in paths:
            result = seg(path)                             # Result: mask, volumes_ml, qc
        seg(nib.load("scan.nii.gz")); seg((array, affine)); seg(sitk.ReadImage("scan.nii.gz"))

    Args:
        pipeline, model, device, keep_largest, tta, allow_ct: as :func:`segment`; options the
            pipeline would not act on are refused here (:func:`kidneyseg.pipelines.check_segment_options`).

    Raises:
        InputError: unknown pipeline, unsupported option, bad model folder (at construction);
            unreadable or unsupported input (per call, before the network runs).
    """

    def __init__(self, pipeline: str | None = None, model: str | Path | None = None, device: str = "auto",
                 keep_largest: bool = True, tta: bool = True, allow_ct: bool = False) -> None:
        pipeline = pipeline or default_pipeline(model)
        check_segment_options(pipeline, tta=tta, keep_largest=keep_largest, allow_ct=allow_ct)
        if PIPELINES[pipeline].modality == "US":
            raise InputError(f"Segmenter: pipeline {pipeline} segments 2D frames; use kidneyseg.segment per frame")
        self.pipeline = pipeline
        self.pipe = configure_pipeline(get_pipeline(pipeline, model=None if model is None else str(model),
                                                    device=device), keep_largest, tta, allow_ct)

    def __call__(self, image, secondary=None) -> Result:
        """Segment one image: a path, :class:`~kidneyseg.io.Image`, nibabel image, SimpleITK
        image or ``(array, affine)`` (RAS+ affine in mm); ``secondary`` likewise, for the
        pipelines that take one.

        Returns:
            :class:`~kidneyseg.pipelines.Result` (mask on the input's grid, volumes in mL, QC).
        """
        from .io.convert import as_image

        img = check_volume(as_image(image))
        if secondary is None:
            return self.pipe.segment(img)
        check_segment_options(self.pipeline, secondary=True)
        return self.pipe.segment(img, secondary=check_volume(as_image(secondary), "secondary image"))

    segment = __call__


def _segment_us(image, pipeline: str, model, device: str, keep_largest: bool, pixel_spacing_mm):
    from .preprocess.ultrasound import USFrame, read_us_frame

    if isinstance(image, (str, Path)):
        frame = read_us_frame(image, pixel_spacing_mm)
    elif isinstance(image, USFrame):
        frame = image
    elif isinstance(image, np.ndarray) and image.ndim == 2:
        sp = None if pixel_spacing_mm is None else (float(pixel_spacing_mm),) * 2
        frame = USFrame(np.clip(np.asarray(image, dtype=np.float32), 0, 1), None, sp)
    else:
        raise InputError(f"image: {pipeline} takes a 2D frame (path, USFrame or (H, W) array), got {type(image).__name__}")
    pipe = get_pipeline(pipeline, model=None if model is None else str(model), device=device)
    pipe.keep_largest = keep_largest
    return pipe.segment(frame)


def segment_files(inputs: list[str | Path] | None, out_dir: str | Path, pipeline: str | None = None,
                  model: str | Path | None = None, device: str = "auto", overwrite: bool = False,
                  overlay: bool = True, keep_largest: bool = True, progress: bool = True,
                  threads: int = 0, secondary: str | Path | None = None,
                  pixel_spacing_mm: float | None = None, output_type: str = "nifti",
                  series: str | None = None, manifest: str | Path | None = None,
                  resume: bool = False, report: bool = False, engine: str = "local", address: str | None = None,
                  workers: int = 2, tta: bool = True, allow_ct: bool = False,
                  save_probabilities: bool = False, volume: int | None = None) -> SegmentSummary:
    """Segment files and folders into ``out_dir``: ``run_segment(SegmentRequest(...))`` with
    these arguments (:class:`kidneyseg.runner.SegmentRequest` documents each).

    Writes per case ``<case>_seg.nii.gz`` (input grid), ``<case>_labels.json`` (label map)
    and ``<case>_overlay.png``, and for all finished cases ``volumes.csv`` and
    ``volumes.json``. Every file is staged and renamed into place only when its case
    succeeded, so a failure leaves no partial output. A case that fails with bad input is
    reported in the summary and the others go on.

    ``secondary`` (``unsupervised-cluster`` only, one input only) is a second sequence of
    the same exam, registered to the input and fused as a channel.

    Cohorts: ``manifest`` (a CSV with ``path`` and optional ``case`` columns, see
    :func:`kidneyseg.batch.read_manifest`) instead of ``inputs``, or ``resume=True`` with
    ``inputs``, keeps ``status.csv``/``status.json`` in ``out_dir`` (one row per case: done,
    or failed with the error, and seconds), rewritten with the volume tables after every
    case; a re-run skips the cases whose recorded outputs are unchanged (SHA-256) and
    redoes the others. A missing input in a manifest is a failed row, not a stop.

    ``report`` also writes ``report.html`` (self-contained: per case the kidneys in three
    planes, the volume table with QC flags, and for a cohort the volume distribution).

    ``engine="ray"`` runs the cases on a Ray cluster (``address``; default a local instance
    with ``workers`` workers), one model load per worker; outputs go to ``out_dir``, which
    every worker must see (a shared file system).

    ``series`` picks the series of DICOM folders that hold several: a SeriesInstanceUID,
    ``"largest"`` or ``"description:TEXT"`` (:func:`kidneyseg.io.readers.resolve_series`).
    ``volume`` (1-based) picks the volume of 4D NIfTI inputs, and the image set of a DICOM
    series holding several images per slice position (echoes, magnitude and phase, inversion
    times); without it a 4D file is refused and a multi-echo series gives the magnitude of
    its first echo (:mod:`kidneyseg.io.image_sets`).

    ``output_type``: ``"nifti"`` (default), ``"dicom-seg"`` (a DICOM Segmentation object
    ``<case>_seg.dcm`` referencing the input series; DICOM series inputs only), ``"both"``, or
    ``"rtstruct"`` (an RT Structure Set ``<case>_rtstruct.dcm`` for radiotherapy systems,
    contours per slice, by rt-utils; DICOM series inputs only; ``pip install 'kidneyseg[rtstruct]'``).

    For the ultrasound pipeline (``us-ensemble``) the inputs are 2D frames and the outputs
    are ``<case>_seg.png`` (0/1, the frame's size), ``<case>_labels.json``,
    ``<case>_overlay.png`` and ``areas.csv``/``areas.json`` (area in mm^2 when
    ``pixel_spacing_mm`` or the DICOM spacing is known, else empty).

    Raises:
        InputError: missing inputs, colliding case names, unwritable output folder,
            existing outputs without ``overwrite``, unknown pipeline or bad model folder,
            ``secondary`` with several inputs or a pipeline that takes none, or an
            unreadable secondary image.
    """
    request = SegmentRequest(
        out_dir=Path(out_dir), inputs=tuple(inputs or ()), manifest=manifest, pipeline=pipeline or default_pipeline(model),
        model=model, device=device, overwrite=overwrite, overlay=overlay, keep_largest=keep_largest,
        progress=progress, threads=threads, secondary=secondary, pixel_spacing_mm=pixel_spacing_mm,
        output_type=output_type, series=series, resume=resume, report=report, engine=engine, address=address,
        workers=workers, tta=tta, allow_ct=allow_ct, save_probabilities=save_probabilities, volume=volume)
    return run_segment(request)


def train_model(config, out_dir: str | Path, folds: int | str | None = None, progress: bool = True) -> Path:
    """Train a model (see :class:`kidneyseg.training.TrainConfig`).

    Args:
        config: the training configuration.
        out_dir: model folder.
        folds: ``None`` or ``"all"`` (nnU-Net's meaning) trains one model on all cases into
            ``out_dir``; an int trains that cross-validation fold into ``out_dir/fold_N``;
            ``"cv"`` trains every fold, writes ``cv_summary.json`` and then the final model on
            all cases into ``out_dir`` (until 2026-12-03 ``"all"`` meant this).

    Returns:
        The folder of the model written last.
    """
    from .training.trainer import summarise_cv, train
    from .validation import validate_mr

    out = Path(out_dir)
    if folds is None or folds == "all":
        return train(config.replace(fold=None), out, progress, validate_mr)
    if folds == "cv":
        for k in range(config.folds):
            train(config.replace(fold=k), out / f"fold_{k}", progress, validate_mr)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes (and has written the folds)
            summarise_cv([out / f"fold_{k}" for k in range(config.folds)], out / "cv_summary.json")
        return train(config.replace(fold=None), out, progress, validate_mr)
    return train(config.replace(fold=int(folds)), out / f"fold_{int(folds)}", progress, validate_mr)


def train(config, out_dir: str | Path, folds: int | str | None = None, progress: bool = True,
          dataset: str | Path | None = None, layout: str = "chaos") -> Path:
    """``kidneyseg train`` from Python: :func:`train_model` (same arguments) for a
    :class:`~kidneyseg.training.TrainConfig`, :func:`train_em_unet3d` for an
    :class:`~kidneyseg.specs.em_unet.EMUNetConfig` (then ``dataset`` is required, in
    ``layout`` ``"chaos"`` or ``"nnunet"``)."""
    from .specs.em_unet import EMUNetConfig

    if isinstance(config, EMUNetConfig):
        if dataset is None:
            raise InputError("train: an em-unet3d config needs dataset=FOLDER")
        return train_em_unet3d(config, dataset, out_dir, layout=layout, progress=progress)
    return train_model(config, out_dir, folds=folds, progress=progress)


def train_em_unet3d(config, dataset: str | Path, out_dir: str | Path, layout: str = "chaos",
                    exclude: tuple[str, ...] = (), device: str = "auto", progress: bool = True,
                    folds: int | str | None = None, subjects: str | Path | None = None,
                    subject_pattern: str | None = None) -> Path:
    """Train pipeline ``em-unet3d`` (seed 000) on a CHAOS or nnU-Net raw folder; see
    :func:`kidneyseg.training.em_unet.train_em_unet` for the outputs and errors. With
    ``folds`` (``"loso"`` or a number) cross-validate first
    (:func:`kidneyseg.validation.cross_validate_em`: ``fold_K/`` and ``cv_summary.json``), folds
    grouped by subject: ``subjects`` (CSV ``case,subject``) or ``subject_pattern`` (a regular
    expression whose first group is the subject, :func:`kidneyseg.validation.read_subjects`)."""
    from .training.em_unet import chaos_train_cases, train_em_unet
    from .validation import cross_validate_em, read_subjects

    cases = chaos_train_cases(dataset, exclude=exclude, layout=layout)
    groups = read_subjects([c.case_id for c in cases], subjects, subject_pattern)
    if folds is not None:
        cross_validate_em(cases, config, out_dir, folds, device=device, progress=progress, subjects=groups)
        return Path(out_dir)
    return train_em_unet(cases, config, out_dir, device=device, progress=progress)


def dti_maps(dwi: str | Path, bval: str | Path, bvec: str | Path, out_dir: str | Path, mask: str = "auto",
             fit_method: str = "WLS", overwrite: bool = False) -> dict[str, Path]:
    """``kidneyseg dti``: fit the diffusion tensor (dipy) and write FA, MD, AD, RD (mm^2/s),
    the six tensor elements and the fitted mask on the DWI's grid, plus ``dti.json``.

    Args:
        dwi: 4D NIfTI; bval, bvec: FSL text files.
        mask: ``"auto"`` (dipy ``median_otsu``), ``"none"``, or a mask NIfTI path on the
            DWI's grid.

    Raises:
        InputError: see :func:`kidneyseg.diffusion.read_dwi` and :func:`~kidneyseg.diffusion.fit_tensor`;
            a mask file on another grid; outputs exist without ``overwrite``.
    """
    from .diffusion import fit_tensor, read_dwi, write_tensor_maps

    series = read_dwi(dwi, bval, bvec)
    out = Path(out_dir)
    if not overwrite:
        for name in ("fa", "md", "ad", "rd", "tensor", "mask"):
            if (out / f"{name}.nii.gz").exists():
                raise InputError(f"{out / (name + '.nii.gz')}: output exists (use --overwrite to replace it)")
    if mask == "none":
        mask_arr = None
    elif mask == "auto":
        mask_arr = "auto"
    else:
        m = read_image(mask)
        if m.shape != series.data.shape[:3] or not np.allclose(m.affine, series.affine, atol=1e-3):
            raise InputError(f"{mask}: mask grid {m.shape} differs from the DWI's {series.data.shape[:3]}")
        mask_arr = np.asarray(m.array) > 0
    maps = fit_tensor(series, mask_arr, fit_method)
    return write_tensor_maps(maps, series, out, overwrite=overwrite)


def evaluate(pred: str | Path, ref: str | Path, out_dir: str | Path | None = None, **options):
    """Score predicted masks against references; see
    :func:`kidneyseg.metrics.files.evaluate_files` for the options, outputs and errors.

    Example::

        ev = kidneyseg.evaluate("out/", "refs/", "eval/", regions="kits")
        ev.summary  # per region and metric: n, n_inf, mean, std, median, min, max
    """
    from .metrics.files import evaluate_files

    return evaluate_files(pred, ref, out_dir, **options)


def example_dir() -> Path:
    """Folder of the bundled example (CHAOS T2 case 39, CC BY-SA 4.0)."""
    return Path(str(resources.files("kidneyseg") / "assets" / "example"))


def run_demo(out_dir: str | Path = "demo_output", device: str = "auto", overwrite: bool = False,
             progress: bool = True, threads: int = 0) -> dict:
    """Segment the bundled example, print volumes and Dice against the expert mask.

    Returns:
        ``{"volumes": row, "dice": {name: value}}``.
    """
    from .metrics import dice

    ex = example_dir()
    image_path = ex / "image_39.nii.gz"
    summary = segment_files([image_path], out_dir, device=device, overwrite=overwrite, progress=progress,
                            threads=threads)
    if summary.failures:
        raise InputError(summary.failures[0][1])
    row = summary.rows[0]
    pred = np.asarray(read_image(Path(out_dir) / "image_39_seg.nii.gz").array)
    ref_img = read_image(ex / "label_39_kidneys.nii.gz")
    ref = np.asarray(ref_img.array)
    labels = json.loads((ex / "label_39_kidneys.json").read_text())
    scores = {name: dice(pred == int(v), ref == int(v)) for v, name in labels.items()}
    print(f"bundled example: CHAOS T2 case 39 (not used for training), written to {out_dir}/")
    print(f"{'kidney':<14}{'volume mL':>10}{'expert mL':>10}{'Dice':>8}")
    for v, name in labels.items():
        ref_ml = float((ref == int(v)).sum()) * ref_img.voxel_volume_ml
        print(f"{name:<14}{row[name + '_ml']:>10.1f}{ref_ml:>10.1f}{scores[name]:>8.3f}")
    print(f"segment time {row['seconds']:.1f} s; QC: kidney_count={row['kidney_count']}, "
          f"touches_border={row['touches_border']}" + (f"; model {row['model']} ({row['route']})" if "route" in row else ""))
    return {"volumes": row, "dice": scores}


def plan_dataset(dataset: str | Path, out: str | Path, layout: str = "kits", memory_budget_gb: float = 8.0,
                 target_spacing_mm: tuple[float, float, float] | None = None, normalisation: str = "ct_clip_zscore",
                 masks_only: bool = False, overwrite: bool = False, base_filters: int = 32) -> "Plan":
    """``kidneyseg plan``: fingerprint a CT training set and write ``plan.json`` (the plan and
    the fingerprint it came from), nnU-Net style (:mod:`kidneyseg.planning`).

    Args:
        dataset: a KiTS folder (``case_XXXXX/``), an nnU-Net raw folder or a CHAOS folder.
        layout: ``"kits"``, ``"nnunet"`` or ``"chaos"``.
        memory_budget_gb: memory one training step may use.
        target_spacing_mm: (R, A, S) override, e.g. seed 002's (1.99, 1.99, 1.99).
        normalisation: ``"ct_clip_zscore"`` or ``"case_percentile"`` (seed 002).
        masks_only: plan from the masks' geometry alone (annotation releases without images;
            forces ``case_percentile``).
        base_filters: feature maps of the first level (doubling per level; seed 002: 32).

    Raises:
        InputError: see :func:`kidneyseg.planning.fingerprint` and
            :func:`~kidneyseg.planning.make_plan`; ``out`` exists without ``overwrite``.
    """
    from .datasets.layouts import kits_cases, list_cases
    from .io.writers import write_json
    from .labels import KITS
    from .planning import fingerprint, make_plan

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: output exists (use --overwrite to replace it)")
    if not out.parent.is_dir():  # checked before the (slow) fingerprint, not after
        raise InputError(f"{out}: the folder {out.parent} does not exist")
    if layout == "kits":
        cases = kits_cases(dataset, require_images=not masks_only)
    else:
        cases = list_cases(dataset, layout, KITS)
    if masks_only:
        normalisation = "case_percentile"
    fp = fingerprint(cases, read_labels=True, read_images=not masks_only)
    plan = make_plan(fp, memory_budget_gb=memory_budget_gb, target_spacing_mm=target_spacing_mm,
                     normalisation=normalisation, base_filters=base_filters)
    write_json({"plan": plan.to_dict(), "fingerprint": fp.to_dict(), "dataset": str(dataset), "layout": layout}, out)
    return plan


def train_kits_unet3d(config, dataset: str | Path, out: str | Path, layout: str = "kits",
                      plan: "str | Path | Plan | None" = None, memory_budget_gb: float = 8.0,
                      exclude: tuple[str, ...] = (), progress: bool = True) -> Path:
    """``kidneyseg train --pipeline kits-unet3d``: train seed 002's 3D U-Net on a KiTS or nnU-Net
    raw dataset (labels 1 kidney, 2 tumour, 3 cyst).

    Args:
        config: :class:`kidneyseg.specs.kits.KitsConfig`.
        dataset: KiTS folder (``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``) or nnU-Net raw folder.
        layout: ``"kits"`` or ``"nnunet"``.
        plan: a :class:`~kidneyseg.planning.Plan`, a plan JSON path (``kidneyseg plan``), or ``None``
            to plan the dataset now with ``memory_budget_gb``.
        exclude: case ids left out.

    Returns:
        the model folder.

    Raises:
        InputError: see :func:`kidneyseg.training.kits.train_kits_unet3d` and :func:`plan_dataset`.
    """
    from .datasets.layouts import kits_cases, list_cases
    from .labels import KITS
    from .planning import Plan, fingerprint, make_plan
    from .training.kits import train_kits_unet3d as _train

    cases = kits_cases(dataset) if layout == "kits" else list_cases(dataset, layout, KITS)
    cases = [c for c in cases if c.case_id not in set(exclude)]
    if plan is None:
        plan = make_plan(fingerprint(cases), memory_budget_gb=memory_budget_gb)
    elif not isinstance(plan, Plan):
        plan = Plan.load(plan)
    return _train(config, cases, out, plan, progress=progress)


def train_c2f_cascade(config, dataset: str | Path, out: str | Path, layout: str = "kits",
                      exclude: tuple[str, ...] = (), progress: bool = True) -> Path:
    """``kidneyseg train --pipeline c2f-cascade``: train seed 004's five networks on a KiTS or
    nnU-Net raw dataset (labels 1 kidney, 2 tumour, 3 cyst; cysts are trained as kidney).

    Args:
        config: :class:`kidneyseg.specs.c2f.C2FConfig`.
        dataset: KiTS folder (``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``) or nnU-Net raw folder.
        layout: ``"kits"`` or ``"nnunet"``.
        exclude: case ids left out.

    Returns:
        the model folder.

    Raises:
        InputError: see :func:`kidneyseg.training.c2f.train_c2f_cascade`.
    """
    from .datasets.layouts import kits_cases, list_cases
    from .labels import KITS
    from .training.c2f import train_c2f_cascade as _train

    cases = kits_cases(dataset) if layout == "kits" else list_cases(dataset, layout, KITS)
    cases = [c for c in cases if c.case_id not in set(exclude)]
    return _train(config, cases, out, progress=progress)


__all__ = ["Segmenter", "dti_maps", "evaluate", "example_dir", "expand_inputs", "output_lock", "plan_dataset",
           "run_demo", "run_segment", "segment", "segment_files", "train", "train_c2f_cascade", "train_em_unet3d",
           "train_kits_unet3d", "train_model"]
