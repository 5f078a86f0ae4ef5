"""Evaluation of label maps: per-label and hierarchical regions (KiTS), the full metric
set per region, and cohort summaries that count infinite distances instead of dropping
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..arrays import bounding_box
from .overlap import Confusion
from .surface import (
    average_surface_distances_mm,
    assd_mm,
    check_spacing,
    hausdorff95_mm,
    hausdorff_mm,
    surface_dice,
    surface_distances,
)


@dataclass(frozen=True)
class Region:
    """A structure to evaluate: the union of some label values.

    Attributes:
        name: column value in the outputs, e.g. ``"kidney_left"`` or ``"masses"``.
        labels: label values whose union forms the region (non-empty, positive ints).
        tolerance_mm: surface Dice tolerance in mm.
    """

    name: str
    labels: tuple[int, ...]
    tolerance_mm: float = 1.0

    def __post_init__(self) -> None:
        labels = tuple(int(v) for v in self.labels)
        if not labels or any(v <= 0 for v in labels):
            raise ValueError(f"Region {self.name!r}: labels must be positive ints, got {self.labels!r}")
        if not (math.isfinite(self.tolerance_mm) and self.tolerance_mm >= 0):
            raise ValueError(f"Region {self.name!r}: tolerance_mm must be >= 0, got {self.tolerance_mm}")
        object.__setattr__(self, "labels", labels)


KITS_REGIONS: tuple[Region, ...] = (
    Region("kidney_and_masses", (1, 2, 3), 1.0331),
    Region("masses", (2, 3), 1.1329),
    Region("tumor", (2,), 1.1498),
)
"""KiTS21/23 hierarchical evaluation classes with the KiTS23 surface-Dice tolerances
(mm): kidney + masses (labels 1, 2, 3), masses (2, 3), tumour (2)."""

MR_KIDNEY_REGIONS: tuple[Region, ...] = (
    Region("kidney_right", (1,)),
    Region("kidney_left", (2,)),
    Region("kidneys", (1, 2)),
)
"""kidneyseg MRI label map (1 right, 2 left kidney) plus both kidneys together."""

METRICS: tuple[str, ...] = (
    "dice", "jaccard", "precision", "recall", "specificity", "accuracy", "f1",
    "volume_difference", "pkvd", "hausdorff_mm", "hd95_mm", "assd_mm",
    "asd_pred_to_ref_mm", "asd_ref_to_pred_mm", "surface_dice",
)
"""Metric columns of every evaluation row, in output order."""


def label_regions(labels: Iterable[int], names: Mapping[int, str] | None = None, tolerance_mm: float = 1.0) -> tuple[Region, ...]:
    """One :class:`Region` per label value, named from ``names`` or ``label_<value>``."""
    names = names or {}
    return tuple(Region(names.get(int(v), f"label_{int(v)}"), (int(v),), tolerance_mm) for v in sorted(set(labels)))


def present_labels(*label_maps: np.ndarray) -> list[int]:
    """Sorted non-zero label values occurring in any of the arrays."""
    found: set[int] = set()
    for arr in label_maps:
        found.update(int(v) for v in np.unique(arr) if v != 0)
    return sorted(found)


def check_label_array(name: str, arr: object) -> np.ndarray:
    """Validate an integer label map (``name`` is used in the message).

    Raises:
        TypeError: not a numpy array, or a float array with non-integer values.
        ValueError: negative labels.
    """
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy label array, got {type(arr).__name__}")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise TypeError(f"{name}: expected integer labels, got dtype {arr.dtype} with non-integer values")
        if arr.size and float(np.abs(arr).max()) > np.iinfo(np.int32).max:
            raise TypeError(f"{name}: label values up to {float(np.abs(arr).max()):.6g} (integer labels above 2^31 "
                            "are not label values)")
        arr = arr.astype(np.int32)
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, found {int(arr.min())}")
    return arr


def _region_mask(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    if len(values) == 1:
        return labels == values[0]
    return np.isin(labels, values)


def evaluate_region(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float], tolerance_mm: float,
                    size: int | None = None) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one pair of boolean masks.

    Args:
        pred, ref: bool masks, same shape, 2D or 3D (a crop is fine, see ``size``).
        spacing_mm: voxel size in mm per array axis.
        tolerance_mm: surface Dice tolerance.
        size: voxel count of the full image if ``pred``/``ref`` are a crop holding all their
            foreground (for specificity and accuracy).

    Returns:
        ``{metric: float}``, plus ``voxels_pred``, ``voxels_ref`` and the confusion counts
        ``tp``, ``fp``, ``fn``, ``tn`` (voxels). Never NaN; distances
        of a miss are ``inf`` (rules in :mod:`kidneyseg.metrics.overlap` and
        :mod:`kidneyseg.metrics.surface`).
    """
    c = Confusion.from_masks(pred, ref, size=size)
    sd = surface_distances(pred, ref, spacing_mm)
    asd_p, asd_r = average_surface_distances_mm(sd)
    return {
        "voxels_pred": c.n_pred, "voxels_ref": c.n_ref,
        "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
        "dice": c.dice, "jaccard": c.jaccard, "precision": c.precision, "recall": c.recall,
        "specificity": c.specificity, "accuracy": c.accuracy, "f1": c.f1,
        "volume_difference": c.volume_difference, "pkvd": c.pkvd,
        "hausdorff_mm": hausdorff_mm(sd), "hd95_mm": hausdorff95_mm(sd), "assd_mm": assd_mm(sd),
        "asd_pred_to_ref_mm": asd_p, "asd_ref_to_pred_mm": asd_r,
        "surface_dice": surface_dice(sd, tolerance_mm),
    }


def evaluate_labels(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float],
                    regions: Sequence[Region] | None = None, voxel_volume_ml: float | None = None,
                    require_present: bool = False, names: Mapping[int, str] | None = None,
                    tolerance_mm: float = 1.0, pixel_area_mm2: float | None = None) -> list[dict]:
    """Evaluate two label maps region by region.

    Both maps are first cropped to the bounding box of all their non-zero voxels, so each
    region's mask is built on the crop only (exact: outside it every region is empty in
    both maps; true negatives outside are added back).

    Args:
        pred: predicted label map, integer (or bool) array, 2D ``(H, W)`` or 3D in any axis
            order shared with ``ref``.
        ref: reference label map, same shape.
        spacing_mm: voxel size in mm along each array axis (required, positive).
        regions: regions to evaluate; ``None`` -> one region per label value present in
            either map, named from ``names`` (else ``label_<v>``), with ``tolerance_mm``.
        voxel_volume_ml: volume of one voxel in mL; if given, rows carry
            ``volume_pred_ml`` and ``volume_ref_ml``.
        require_present: raise if a region's labels occur in neither map (use when the
            user named the labels explicitly).
        pixel_area_mm2: area of one pixel of a 2D map in mm^2; if given, rows carry
            ``area_pred_mm2`` and ``area_ref_mm2``.
        names: label value -> region name, for ``regions=None``.
        tolerance_mm: surface Dice tolerance for ``regions=None``.

    Returns:
        One dict per region: ``region``, ``labels`` (e.g. ``"1+2+3"``), ``tolerance_mm``,
        voxel counts, optional volumes, ``pred_empty``, ``ref_empty`` and every metric of
        :data:`METRICS`.

    Raises:
        TypeError: non-integer label maps. ValueError: shapes differ, spacing missing or
        non-positive, or (with ``require_present``) a label absent from both maps.
    """
    pred = check_label_array("pred", pred)
    ref = check_label_array("ref", ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref: shapes differ, pred {pred.shape} vs ref {ref.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred and ref: expected 2D or 3D label maps, got shape {pred.shape}")
    sp = check_spacing(spacing_mm, pred.ndim)
    box = bounding_box((pred > 0) | (ref > 0))
    # no foreground anywhere: one background voxel stands in for the image
    crop = tuple(slice(0, 1) for _ in pred.shape) if box is None else tuple(slice(a, b) for a, b in zip(*box))
    pc, rc = pred[crop], ref[crop]
    present = present_labels(pc, rc)
    if regions is None:
        regions = label_regions(present, names, tolerance_mm)
    if require_present:
        for region in regions:
            if not set(region.labels) & set(present):
                raise ValueError(f"labels: region {region.name!r} uses labels {list(region.labels)}, "
                                 f"which occur in neither mask (present: {present})")
    rows = []
    for region in regions:
        p, r = _region_mask(pc, region.labels), _region_mask(rc, region.labels)
        row: dict = {"region": region.name, "labels": "+".join(str(v) for v in region.labels),
                     "tolerance_mm": region.tolerance_mm}
        row.update(evaluate_region(p, r, sp, region.tolerance_mm, size=pred.size))
        if voxel_volume_ml is not None:
            row["volume_pred_ml"] = row["voxels_pred"] * voxel_volume_ml
            row["volume_ref_ml"] = row["voxels_ref"] * voxel_volume_ml
        if pixel_area_mm2 is not None:
            row["area_pred_mm2"] = row["voxels_pred"] * pixel_area_mm2
            row["area_ref_mm2"] = row["voxels_ref"] * pixel_area_mm2
        row["pred_empty"] = row["voxels_pred"] == 0
        row["ref_empty"] = row["voxels_ref"] == 0
        rows.append(row)
    return rows


SUMMARY_STATS: tuple[str, ...] = ("n", "n_inf", "mean", "std", "median", "min", "max")


def summarise(rows: Sequence[Mapping], metrics: Sequence[str] = METRICS) -> list[dict]:
    """Per region and metric: n, n_inf, mean, std (sample, ddof 1), median, min, max.

    Infinite values (a missed or hallucinated structure) are kept: ``n_inf`` counts them
    and they make the mean, std and max ``inf`` (the median only if half or more are
    infinite). Nothing is dropped and nothing is NaN; a single row has std 0.0.

    Returns:
        A list of dicts with ``region``, ``metric`` and :data:`SUMMARY_STATS`, regions in
        first-seen order.
    """
    regions: list[str] = []
    for r in rows:
        if r["region"] not in regions:
            regions.append(r["region"])
    out = []
    for region in regions:
        sub = [r for r in rows if r["region"] == region]
        for m in metrics:
            v = np.array([float(r[m]) for r in sub], dtype=np.float64)
            n_inf = int(np.count_nonzero(np.isinf(v)))
            finite = n_inf == 0
            out.append({
                "region": region, "metric": m, "n": int(v.size), "n_inf": n_inf,
                "mean": float(v.mean()) if finite else math.inf,
                "std": (float(v.std(ddof=1)) if v.size > 1 else 0.0) if finite else math.inf,
                "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            })
    return out
