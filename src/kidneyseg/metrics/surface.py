"""Surface-distance metrics in millimetres: Hausdorff, HD95, average (symmetric) surface
distance and surface Dice (normalised surface distance) at a tolerance.

Method: the surfel-area method of DeepMind's ``surface-distance`` library (Nikolov et
al., 2018; the KiTS challenge's evaluation code uses it). The surface of a mask is the
set of voxel corners whose 2x2(x2) neighbourhood is neither empty nor full; each corner
carries the area (3D, mm^2) or contour length (2D, mm) of the marching-cubes
(marching-squares) surface element of its neighbourhood, taken from that library's
lookup tables, so every figure is the library's figure. Percentiles, means and
overlaps are weighted by those areas.

What differs from the library, and why:

* Speed. Both surfaces are found inside the bounding box of the union of the masks
  only, and the distance from each surface point to the other surface is the distance
  to its nearest neighbour in a k-d tree of the other surface's points
  (``scipy.spatial.cKDTree``). This equals the library's Euclidean distance transform
  evaluated at surface points (the transform's value is exactly that nearest-neighbour
  distance), but costs time in proportion to the surface, not the volume; one tree per
  surface serves every metric.
* Empty masks never give NaN and never crash (the library returns NaN or raises
  ``AttributeError`` on NumPy 2 for them): both masks empty -> distances 0.0 and
  surface Dice 1.0; exactly one empty -> distances ``inf`` and surface Dice 0.0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..arrays import bounding_box
from .overlap import check_masks


def check_spacing(spacing_mm: object, ndim: int) -> tuple[float, ...]:
    """Validate a voxel spacing.

    Args:
        spacing_mm: one positive finite number per array axis, in mm, in array-axis order.
        ndim: number of array axes (2 or 3).

    Returns:
        The spacing as a tuple of floats.

    Raises:
        ValueError: missing, wrong length, non-finite or non-positive spacing.
    """
    if spacing_mm is None:
        raise ValueError("spacing_mm: required for distance metrics (mm per voxel along each array axis), got None")
    try:
        sp = tuple(float(s) for s in spacing_mm)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm: expected {ndim} numbers, got {spacing_mm!r}") from None
    if len(sp) != ndim:
        raise ValueError(f"spacing_mm: expected {ndim} values for {ndim}D masks, got {len(sp)} ({spacing_mm!r})")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_mm: expected positive finite values, got {sp}")
    return sp


@functools.lru_cache(maxsize=64)
def _area_table(spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Surfel area (3D, mm^2) or contour length (2D, mm) for every neighbour code, from
    the ``surface-distance`` library's marching-cubes / marching-squares tables."""
    from surface_distance import lookup_tables

    if len(spacing_mm) == 3:
        return np.asarray(lookup_tables.create_table_neighbour_code_to_surface_area(spacing_mm), dtype=np.float64)
    return np.asarray(lookup_tables.create_table_neighbour_code_to_contour_length(spacing_mm), dtype=np.float64)


def _kernel(ndim: int) -> np.ndarray:
    """Bit weight of each corner of the 2x2(x2) neighbourhood (the library's encoding)."""
    if ndim == 3:
        return np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)
    return np.array([[8, 4], [2, 1]], dtype=np.uint8)


def _surfels(padded: np.ndarray, spacing_mm: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Surface points (mm, shape ``(N, ndim)``) and their areas (``(N,)``) of a mask that
    has a zero margin of one voxel on every side."""
    kernel = _kernel(padded.ndim)
    out_shape = tuple(s - 1 for s in padded.shape)
    code = np.zeros(out_shape, dtype=np.uint8)
    for offset in np.ndindex(kernel.shape):
        view = padded[tuple(slice(o, o + n) for o, n in zip(offset, out_shape))]
        code += view * kernel[offset]
    full = 255 if padded.ndim == 3 else 15
    border = (code != 0) & (code != full)
    idx = np.nonzero(border)
    areas = _area_table(spacing_mm)[code[idx]]
    points = np.stack(idx, axis=1).astype(np.float64) * np.asarray(spacing_mm)
    return points, areas


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances between the surfaces of a predicted and a reference mask.

    Attributes:
        pred_to_ref_mm: ``(Np,)`` float64, distance in mm from each surface element of the
            prediction to the reference surface (``inf`` when the reference is empty).
        ref_to_pred_mm: ``(Nr,)`` float64, the same from the reference to the prediction.
        areas_pred: ``(Np,)`` float64 area (mm^2, 3D) or length (mm, 2D) of each element.
        areas_ref: ``(Nr,)`` float64, the same for the reference.
    """

    pred_to_ref_mm: np.ndarray
    ref_to_pred_mm: np.ndarray
    areas_pred: np.ndarray
    areas_ref: np.ndarray

    @property
    def pred_empty(self) -> bool:
        """The prediction has no surface (it is empty)."""
        return self.areas_pred.size == 0

    @property
    def ref_empty(self) -> bool:
        """The reference has no surface (it is empty)."""
        return self.areas_ref.size == 0


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing_mm: object) -> SurfaceDistances:
    """Surface elements of both masks and their distances to the other surface.

    Args:
        pred: predicted mask, bool, shape ``(X, Y)`` or ``(X, Y, Z)``.
        ref: reference mask, bool, same shape.
        spacing_mm: voxel size in mm along each array axis (required).

    Returns:
        :class:`SurfaceDistances`; all arrays empty when both masks are empty.

    Raises:
        TypeError: a mask is not a bool array.
        ValueError: shapes differ, masks are not 2D or 3D, or the spacing is missing or
            not positive.

    Source: DeepMind ``surface-distance`` ``compute_surface_distances`` (surfel method),
    computed on the union bounding box with k-d tree nearest neighbours (see module doc).
    """
    check_masks(pred, ref)
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred and ref: expected 2D or 3D masks, got {pred.ndim}D (shape {pred.shape})")
    sp = check_spacing(spacing_mm, pred.ndim)
    box = bounding_box(pred | ref)
    empty = np.zeros(0, dtype=np.float64)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    lo, hi = box
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    pad_shape = tuple(b - a + 2 for a, b in zip(lo, hi))
    surfaces = []
    for mask in (pred, ref):
        padded = np.zeros(pad_shape, dtype=np.uint8)
        padded[(slice(1, -1),) * mask.ndim] = mask[crop]
        surfaces.append(_surfels(padded, sp))
    (p_pts, p_area), (r_pts, r_area) = surfaces
    if p_pts.shape[0] == 0:
        return SurfaceDistances(empty, np.full(r_pts.shape[0], np.inf), empty, r_area)
    if r_pts.shape[0] == 0:
        return SurfaceDistances(np.full(p_pts.shape[0], np.inf), empty, p_area, empty)
    p2r = cKDTree(r_pts).query(p_pts, k=1, workers=-1)[0]
    r2p = cKDTree(p_pts).query(r_pts, k=1, workers=-1)[0]
    return SurfaceDistances(np.asarray(p2r, np.float64), np.asarray(r2p, np.float64), p_area, r_area)


def _directed_percentile(d: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """Area-weighted percentile as the library computes it: sort by (distance, area),
    normalised cumulative area, first index reaching ``percent / 100``."""
    order = np.lexsort((areas, d))
    d, a = d[order], areas[order]
    cum = np.cumsum(a) / np.sum(a)
    idx = int(np.searchsorted(cum, percent / 100.0))
    return float(d[min(idx, d.size - 1)])


def _empty_rule(sd: SurfaceDistances, both_empty: float, one_empty: float) -> float | None:
    if sd.pred_empty and sd.ref_empty:
        return both_empty
    if sd.pred_empty or sd.ref_empty:
        return one_empty
    return None


def robust_hausdorff_mm(sd: SurfaceDistances, percent: float) -> float:
    """Robust Hausdorff distance: the larger of the two directed area-weighted
    ``percent``-th percentiles of surface distances, in mm.

    Both masks empty -> 0.0; exactly one empty -> ``inf`` (never NaN).

    Raises:
        ValueError: ``percent`` outside [0, 100].
    """
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent: expected a value in [0, 100], got {percent}")
    rule = _empty_rule(sd, 0.0, math.inf)
    if rule is not None:
        return rule
    return max(_directed_percentile(sd.pred_to_ref_mm, sd.areas_pred, percent),
               _directed_percentile(sd.ref_to_pred_mm, sd.areas_ref, percent))


def hausdorff95_mm(sd: SurfaceDistances) -> float:
    """HD95: :func:`robust_hausdorff_mm` at the 95th percentile (max of the two directed
    95th percentiles), in mm. Both empty -> 0.0; one empty -> ``inf``."""
    return robust_hausdorff_mm(sd, 95.0)


def hausdorff_mm(sd: SurfaceDistances) -> float:
    """Hausdorff distance: the largest distance from either surface to the other, in mm.
    Both empty -> 0.0; one empty -> ``inf``."""
    rule = _empty_rule(sd, 0.0, math.inf)
    if rule is not None:
        return rule
    return float(max(sd.pred_to_ref_mm.max(), sd.ref_to_pred_mm.max()))


def average_surface_distances_mm(sd: SurfaceDistances) -> tuple[float, float]:
    """Directed area-weighted mean surface distances ``(pred_to_ref, ref_to_pred)`` in mm.

    A direction whose source surface is empty: 0.0 if the other is empty too, else
    ``inf`` for both directions (a miss is infinitely far).
    """
    rule = _empty_rule(sd, 0.0, math.inf)
    if rule is not None:
        return rule, rule
    return (float(np.sum(sd.pred_to_ref_mm * sd.areas_pred) / np.sum(sd.areas_pred)),
            float(np.sum(sd.ref_to_pred_mm * sd.areas_ref) / np.sum(sd.areas_ref)))


def assd_mm(sd: SurfaceDistances) -> float:
    """Average symmetric surface distance: the area-weighted mean over the elements of
    both surfaces of their distance to the other surface, in mm.

    Both empty -> 0.0; one empty -> ``inf``.
    """
    rule = _empty_rule(sd, 0.0, math.inf)
    if rule is not None:
        return rule
    num = np.sum(sd.pred_to_ref_mm * sd.areas_pred) + np.sum(sd.ref_to_pred_mm * sd.areas_ref)
    return float(num / (np.sum(sd.areas_pred) + np.sum(sd.areas_ref)))


def surface_dice(sd: SurfaceDistances, tolerance_mm: float) -> float:
    """Surface Dice (normalised surface distance, NSD) at ``tolerance_mm``: the area of
    both surfaces lying within the tolerance of the other surface, over the total area.

    Both masks empty -> 1.0; exactly one empty -> 0.0.

    Raises:
        ValueError: ``tolerance_mm`` negative or not finite.

    Source: Nikolov et al. 2018; DeepMind ``compute_surface_dice_at_tolerance``.
    """
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm: expected a finite value >= 0, got {tolerance_mm}")
    rule = _empty_rule(sd, 1.0, 0.0)
    if rule is not None:
        return rule
    overlap = np.sum(sd.areas_pred[sd.pred_to_ref_mm <= tolerance_mm]) + np.sum(sd.areas_ref[sd.ref_to_pred_mm <= tolerance_mm])
    return float(overlap / (np.sum(sd.areas_pred) + np.sum(sd.areas_ref)))
