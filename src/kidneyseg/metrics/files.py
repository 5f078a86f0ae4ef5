"""Evaluate mask files or folders of masks against references and write the tables and
plots of ``kidneyseg evaluate``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io import AtomicOutputs, read_image
from ..labels import REGISTRY
from .evaluate import (KITS_REGIONS, METRICS, MR_KIDNEY_REGIONS, Region, check_label_array, evaluate_labels,
                       evaluate_region, label_regions, summarise)

REGION_SETS: dict[str, str] = {
    "labels": "one region per label value found in the masks (or given with labels=)",
    "kits": "KiTS hierarchical regions: kidney_and_masses (1,2,3), masses (2,3), tumor (2)",
    "mr-kidneys": "kidney_right (1), kidney_left (2), kidneys (1,2)",
    "foreground": "all non-zero labels as one region",
}
"""Names accepted by ``regions=`` (``--regions``)."""

_SEG_SUFFIX = re.compile(r"_seg$")
AFFINE_TOLERANCE_MM = 1e-3
"""Largest allowed difference between the affines of a prediction and its reference."""


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith((".nii", ".nii.gz"))


def _is_mask_file(p: Path) -> bool:
    """A NIfTI mask, or a PNG mask (2D: ultrasound, label values as pixel values)."""
    return _is_nifti(p) or (p.is_file() and p.suffix.lower() == ".png")


def _read_mask(path: Path, pixel_spacing_mm: float | None):
    """A mask file as an :class:`~kidneyseg.io.Image`. A PNG has no geometry: its pixel
    spacing is ``pixel_spacing_mm`` (or 1, i.e. distances and areas in pixels) and its
    affine is diagonal."""
    if path.suffix.lower() != ".png":
        return read_image(path)
    from ..datasets.kidneyus import read_mask_png
    from ..io import Image

    sp = 1.0 if pixel_spacing_mm is None else float(pixel_spacing_mm)
    return Image(read_mask_png(path), np.diag([sp, sp, 1.0, 1.0]), path)


def case_id(path: Path) -> str:
    """Case id of a mask path: the file name without ``.nii``/``.nii.gz`` and without a
    trailing ``_seg`` (kidneyseg's output name), or, for the KiTS layout
    ``case_XXXXX/segmentation.nii.gz``, the folder name."""
    name = path.name
    if name.lower().endswith(".png"):
        return _SEG_SUFFIX.sub("", name[:-4])
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]
    if stem == "segmentation":
        return path.parent.name
    return _SEG_SUFFIX.sub("", stem)


def find_cases(path: str | Path) -> dict[str, Path]:
    """Masks in a file or folder, by case id (see :func:`case_id`).

    A folder contributes its NIfTI files, its PNG masks (2D) and its subfolders'
    ``segmentation.nii.gz`` (KiTS layout); other files are ignored.

    Raises:
        InputError: missing path, a folder without masks, or two masks with one case id.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_file():
        if not _is_mask_file(p):
            raise InputError(f"{p}: expected a NIfTI mask (.nii or .nii.gz) or a PNG mask")
        return {case_id(p): p}
    found: dict[str, Path] = {}
    for child in sorted(p.iterdir()):
        cand = child / "segmentation.nii.gz" if child.is_dir() else child
        if not _is_mask_file(cand):
            continue
        cid = case_id(cand)
        if cid in found:
            raise InputError(f"{p}: two masks for case {cid!r} ({found[cid].name}, {cand.relative_to(p)})")
        found[cid] = cand
    if not found:
        raise InputError(f"{p}: no masks found (expected *.nii.gz or *.png files or case_*/segmentation.nii.gz)")
    return found


def match_cases(pred: str | Path, ref: str | Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair predictions with references by case id.

    Two files are paired whatever their names. Returns ``(pairs, unmatched_pred,
    unmatched_ref)``; pairs are sorted by case id.

    Raises:
        InputError: see :func:`find_cases`; no pair at all.
    """
    p, r = Path(pred), Path(ref)
    preds, refs = find_cases(p), find_cases(r)
    if p.is_file() and r.is_file():
        (rid, rpath), = refs.items()
        return [(rid, next(iter(preds.values())), rpath)], [], []
    pairs = [(c, preds[c], refs[c]) for c in sorted(set(preds) & set(refs))]
    if not pairs:
        raise InputError(f"{p} and {r}: no case id occurs in both (predictions: {sorted(preds)[:5]}, "
                         f"references: {sorted(refs)[:5]})")
    return pairs, sorted(set(preds) - set(refs)), sorted(set(refs) - set(preds))


MAX_AUTO_LABELS = 255
"""With ``regions="labels"`` and no ``labels`` given, a mask with more distinct non-zero values than
this is refused as an intensity image (one region per value would take minutes and mean nothing)."""


def _regions_for(spec: str, labels: Sequence[int] | None, names: dict[int, str], tolerance_mm: float) -> tuple[Region, ...]:
    if spec == "kits":
        return KITS_REGIONS
    if spec == "mr-kidneys":
        return tuple(Region(r.name, r.labels, tolerance_mm) for r in MR_KIDNEY_REGIONS)
    return label_regions(labels or (), names, tolerance_mm)


@dataclass
class _Task:
    case: str
    pred: Path
    ref: Path
    regions: str
    labels: tuple[int, ...] | None
    names: dict[int, str]
    tolerance_mm: float
    pixel_spacing_mm: float | None = None


@dataclass
class _CaseResult:
    rows: list[dict]
    size: int
    spacing_mm: tuple[float, ...]
    voxel_volume_ml: float


def _evaluate_task(t: _Task) -> _CaseResult:
    pred, ref = _read_mask(t.pred, t.pixel_spacing_mm), _read_mask(t.ref, t.pixel_spacing_mm)
    for img in (pred, ref):
        if img.array.ndim not in (2, 3):
            raise InputError(f"{img.source}: expected a 2D or 3D mask, got shape {img.array.shape}")
    if pred.array.shape != ref.array.shape:
        raise InputError(f"{t.pred} and {t.ref}: shapes differ ({pred.array.shape} vs {ref.array.shape})")
    for img, name in ((pred, t.pred), (ref, t.ref)):
        if not np.all(np.isfinite(img.affine)):
            raise InputError(f"{name}: the affine holds NaN or Inf values (no geometry to score in mm)")
    diff = float(np.max(np.abs(pred.affine - ref.affine)))
    if not diff <= AFFINE_TOLERANCE_MM:
        raise InputError(f"{t.pred} and {t.ref}: affines differ by up to {diff:.4g} mm (masks must share one grid)")
    arrays = []
    for img, name in ((pred, t.pred), (ref, t.ref)):
        try:
            arrays.append(check_label_array(str(name), img.array))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{exc} (not a label mask)") from None
    spacing = pred.spacing_mm[: arrays[0].ndim]
    regions: tuple[Region, ...] | None
    if t.regions == "foreground":
        arrays = [(a > 0).view(np.uint8) for a in arrays]
        regions = (Region("foreground", (1,), t.tolerance_mm),)
    elif t.regions == "labels" and not t.labels:
        regions = None  # the labels present in this case, found on the foreground crop
        for arr, name in zip(arrays, (t.pred, t.ref)):
            top = int(arr.max()) if arr.size else 0
            n = int(np.count_nonzero(np.bincount(arr.ravel())[1:])) if top < 2 ** 24 else None  # bincount: bounded memory
            if n is None or n > MAX_AUTO_LABELS:
                found = f"{n} distinct labels" if n is not None else f"label values up to {top}"
                raise InputError(f"{name}: {found}: an intensity image, not a mask? (at most {MAX_AUTO_LABELS} "
                                 "labels are scored unless named with --labels)")
    else:
        regions = _regions_for(t.regions, t.labels, t.names, t.tolerance_mm)
    flat = arrays[0].ndim == 2  # 2D masks: areas in mm^2, not volumes
    rows = evaluate_labels(arrays[0], arrays[1], spacing, regions,
                           voxel_volume_ml=None if flat else pred.voxel_volume_ml,
                           pixel_area_mm2=float(np.prod(spacing)) if flat else None,
                           names=t.names, tolerance_mm=t.tolerance_mm)
    for r in rows:
        r["case"] = t.case
    return _CaseResult(rows, int(arrays[0].size), tuple(spacing), pred.voxel_volume_ml)


@dataclass
class Evaluation:
    """Result of :func:`evaluate_files`.

    Attributes:
        rows: one dict per case and region (``case``, ``region``, ``labels``, volumes,
            every metric of :data:`~kidneyseg.metrics.METRICS`).
        summary: per region and metric statistics (see :func:`summarise`).
        unmatched_pred: case ids with a prediction but no reference.
        unmatched_ref: case ids with a reference but no prediction.
        outputs: files written.
    """

    rows: list[dict]
    summary: list[dict]
    unmatched_pred: list[str] = field(default_factory=list)
    unmatched_ref: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)


ROW_COLUMNS: tuple[str, ...] = ("case", "region", "labels", "tolerance_mm", "voxels_pred", "voxels_ref",
                                "volume_pred_ml", "volume_ref_ml", "area_pred_mm2", "area_ref_mm2",
                                "pred_empty", "ref_empty", "tp", "fp", "fn", "tn") + METRICS


def _json_value(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return _json_value(v.item())
    return v


def evaluate_files(pred: str | Path, ref: str | Path, out_dir: str | Path | None = None, regions: str = "labels",
                   labels: Sequence[int] | None = None, label_map: str | None = None, tolerance_mm: float = 1.0,
                   plots: bool = True, overwrite: bool = False, workers: int = 1, progress: bool = True,
                   pixel_spacing_mm: float | None = None, report: bool = False) -> Evaluation:
    """Evaluate predicted masks against reference masks.

    Args:
        pred: a NIfTI mask or a folder of them (``<case>.nii.gz``, ``<case>_seg.nii.gz``,
            or KiTS ``case_X/segmentation.nii.gz``).
        ref: the same for references. Pairs are matched by case id; unmatched cases are
            listed in the result, ``metrics.json`` and the command's output.
        out_dir: folder for ``metrics.csv``, ``summary.csv``, ``metrics.json`` and one
            ``plot_<metric>.png`` per metric; ``None`` writes nothing.
        regions: a key of :data:`REGION_SETS`.
        labels: label values to evaluate with ``regions="labels"``; each must occur in at
            least one mask of the cohort.
        label_map: name of a registry in :mod:`kidneyseg.labels` (``mr_kidneys``, ``kits``,
            ``chaos_mr``) to name label regions; ``None`` names them ``label_<v>``.
        tolerance_mm: surface Dice tolerance for every region except the KiTS regions,
            which use the KiTS23 tolerances.
        plots: write the violin plots.
        overwrite: replace existing outputs.
        workers: processes evaluating cases in parallel.
        progress: show a progress bar.
        pixel_spacing_mm: pixel spacing of PNG masks (2D ultrasound), which carry none;
            ``None``: 1, so distances are in pixels and areas in pixels (recorded in
            ``metrics.json``).
        report: also write ``report.html`` (self-contained: the summary table and the
            metric plots embedded).

    Returns:
        :class:`Evaluation`. Masks absent from a case (both prediction and reference) get
        a row with the both-empty values, so every case has every region.

    Raises:
        InputError: missing or unreadable files, no matching pairs, shapes or affines that
            differ (naming both files), non-label masks, an unknown region set or label map,
            requested labels absent from every mask, existing outputs without ``overwrite``.
    """
    if regions not in REGION_SETS:
        raise InputError(f"regions: expected one of {sorted(REGION_SETS)}, got {regions!r}")
    if label_map is not None and label_map not in REGISTRY:
        raise InputError(f"label_map: expected one of {sorted(REGISTRY)}, got {label_map!r}")
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise InputError(f"tolerance_mm: expected a finite value >= 0, got {tolerance_mm}")
    if labels is not None and (regions != "labels" or any(int(v) <= 0 for v in labels)):
        raise InputError(f"labels: expected positive label values with regions='labels', got {list(labels)}")
    outputs = _output_paths(out_dir, plots) if out_dir is not None else []
    if report and out_dir is not None:
        outputs.append(Path(out_dir) / "report.html")
    if out_dir is not None and not overwrite:
        for o in outputs:
            if o.exists():
                raise InputError(f"{o}: output exists (use --overwrite to replace it)")
    pairs, un_pred, un_ref = match_cases(pred, ref)
    names = dict(REGISTRY[label_map]) if label_map else {}
    tasks = [_Task(c, p, r, regions, tuple(int(v) for v in labels) if labels else None, names, tolerance_mm,
                   pixel_spacing_mm) for c, p, r in pairs]
    from tqdm import tqdm

    results: list[_CaseResult] = []
    # no bar when stderr is not a terminal (logs, pipes), so an error stays one line there
    with tqdm(total=len(tasks), desc="evaluate", unit="case", disable=True if not progress else None,
              leave=False) as bar:
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for res in pool.map(_evaluate_task, tasks):
                    results.append(res)
                    bar.update()
        else:
            for t in tasks:
                results.append(_evaluate_task(t))
                bar.update()
    rows = _complete_rows(results)
    if labels:
        for v in labels:
            if not any(r["labels"] == str(int(v)) and (r["voxels_pred"] or r["voxels_ref"]) for r in rows):
                raise InputError(f"labels: label {int(v)} occurs in no prediction or reference mask")
    rows = [{k: r.get(k) for k in ROW_COLUMNS} for r in rows]
    result = Evaluation(rows=rows, summary=summarise(rows), unmatched_pred=un_pred, unmatched_ref=un_ref)
    if out_dir is not None:
        settings = {"pred": str(pred), "ref": str(ref), "regions": regions, "labels": list(labels) if labels else None,
                    "label_map": label_map, "tolerance_mm": tolerance_mm}
        if any(p.suffix.lower() == ".png" for _, p, _r in pairs):
            settings["png_pixel_spacing_mm"] = pixel_spacing_mm
            if pixel_spacing_mm is None:
                settings["png_units"] = "pixel spacing unknown: *_mm distances are in pixels, *_mm2 areas in pixels"
        _write_outputs(result, Path(out_dir), settings, plots, overwrite, report)
        result.outputs = outputs
    return result


def _complete_rows(results: list[_CaseResult]) -> list[dict]:
    """Add both-empty rows for regions a case lacks, so every case has every region."""
    seen: dict[str, dict] = {}
    for res in results:
        for r in res.rows:
            seen.setdefault(r["region"], r)
    out = []
    for res in results:
        have = {r["region"] for r in res.rows}
        rows = list(res.rows)
        for name, proto in seen.items():
            if name in have:
                continue
            shape = (1,) * len(res.spacing_mm)
            empty = np.zeros(shape, dtype=bool)
            row = {"case": res.rows[0]["case"] if res.rows else "", "region": name, "labels": proto["labels"],
                   "tolerance_mm": proto["tolerance_mm"]}
            row.update(evaluate_region(empty, empty, res.spacing_mm, proto["tolerance_mm"], size=res.size))
            sizes = {"area_pred_mm2": 0.0, "area_ref_mm2": 0.0} if len(res.spacing_mm) == 2 else \
                {"volume_pred_ml": 0.0, "volume_ref_ml": 0.0}
            row.update(sizes, pred_empty=True, ref_empty=True)
            rows.append(row)
        order = list(seen)
        rows.sort(key=lambda r: order.index(r["region"]))
        out.extend(rows)
    return out


def confusion_totals(rows: Sequence[dict]) -> list[dict]:
    """Confusion matrix per region summed over cases (voxels or pixels): ``region``,
    ``cases``, ``tp``, ``fp``, ``fn``, ``tn`` (seed 003, Figure 3)."""
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r["region"], {"region": r["region"], "cases": 0, "tp": 0, "fp": 0, "fn": 0, "tn": 0})
        t["cases"] += 1
        for k in ("tp", "fp", "fn", "tn"):
            t[k] += int(r[k])
    return list(out.values())


def _output_paths(out_dir: str | Path, plots: bool) -> list[Path]:
    d = Path(out_dir)
    paths = [d / "metrics.csv", d / "summary.csv", d / "confusion.csv", d / "metrics.json"]
    if plots:
        paths += [d / f"plot_{m}.png" for m in METRICS]
    return paths


def _csv_text(rows: list[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) and math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _write_outputs(result: Evaluation, out_dir: Path, settings: dict, plots: bool, overwrite: bool,
                   report: bool = False) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot create output folder ({exc.strerror})") from None
    doc = {
        "settings": settings,
        "unmatched_pred": result.unmatched_pred,
        "unmatched_ref": result.unmatched_ref,
        "note": "infinite distances (a structure missing from one mask) are written as the string 'inf'",
        "cases": [{k: _json_value(v) for k, v in r.items()} for r in result.rows],
        "summary": [{k: _json_value(v) for k, v in s.items()} for s in result.summary],
        "confusion": confusion_totals(result.rows),
    }
    with AtomicOutputs(overwrite=overwrite) as outs:
        try:
            outs.stage(out_dir / "metrics.csv").write_text(_csv_text(result.rows, ROW_COLUMNS), encoding="utf-8")
            outs.stage(out_dir / "summary.csv").write_text(
                _csv_text(result.summary, ("region", "metric", "n", "n_inf", "mean", "std", "median", "min", "max")),
                encoding="utf-8")
            outs.stage(out_dir / "confusion.csv").write_text(
                _csv_text(confusion_totals(result.rows), ("region", "cases", "tp", "fp", "fn", "tn")), encoding="utf-8")
            outs.stage(out_dir / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            staged: dict[str, Path] = {}
            if plots:
                from ..report.plots import metric_violin

                for m in METRICS:
                    staged[m] = outs.stage(out_dir / f"plot_{m}.png")
                    metric_violin(result.rows, m, staged[m])
            if report:
                from ..report.html import evaluate_report

                outs.stage(out_dir / "report.html").write_text(evaluate_report(result.summary, staged), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{out_dir}: cannot write outputs ({exc.strerror})") from None
