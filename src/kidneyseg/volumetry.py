"""Kidney volumes in mL and quality-control flags."""

from __future__ import annotations

import numpy as np

from .io import Image


def label_volumes_ml(mask: Image, label_map: dict[int, str]) -> dict[str, float]:
    """Volume of each label in mL: voxel count x |det(affine[:3, :3])| / 1000.

    Args:
        mask: integer label image (3D), any orientation; spacing comes from its affine
            (never a default).
        label_map: value -> name.

    Returns:
        ``{f"{name}_ml": volume}``; an absent label has volume 0.0 and is also reported
        by the ``empty`` QC flag, so 0.0 never silently means "skipped".
    """
    counts = np.bincount(np.asarray(mask.array, dtype=np.int64).ravel(), minlength=max(label_map) + 1)
    return {f"{name}_ml": float(counts[v]) * mask.voxel_volume_ml for v, name in label_map.items()}


def touches_border(mask: np.ndarray) -> bool:
    """True if any non-zero voxel lies on a face of the array (the organ may be cut off)."""
    m = mask > 0
    return bool(any(np.take(m, i, axis=a).any() for a in range(m.ndim) for i in (0, -1)))


LENGTH_MAX_POINTS = 200_000
"""Above this many voxels, the principal axis is fitted on an even subsample (the extremes are
still taken over every voxel)."""


def kidney_length_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """Bipolar (pole-to-pole) length of one kidney in mm: the extent of the mask along its
    principal axis in world coordinates, from outer voxel face to outer voxel face.

    The axis is the first right singular vector of the centred voxel-centre coordinates
    (``numpy.linalg.svd``), so it follows an oblique kidney and any voxel grid; the extent of
    the voxel centres along it gets one voxel's extent along the axis added
    (``sum_k |u . a_k|`` over the affine's columns ``a_k``), as a ruler on the image would
    measure. Ultrasound and MR volumetry studies report this length next to the volume.

    Args:
        mask: boolean ``(X, Y, Z)``.
        affine: ``(4, 4)`` voxel-to-world matrix (mm).

    Returns:
        Length in mm; 0.0 for an empty mask.
    """
    idx = np.argwhere(mask)
    if idx.size == 0:
        return 0.0
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    sample = world[:: max(1, len(world) // LENGTH_MAX_POINTS)]
    centred = sample - sample.mean(0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(sample) > 1 else np.array([1.0, 0.0, 0.0])
    proj = world @ axis
    voxel_extent = float(np.abs(axis @ affine[:3, :3]).sum())
    return float(proj.max() - proj.min()) + voxel_extent


def kidney_measures(mask: Image, label_map: dict[int, str]) -> dict[str, float]:
    """Per-kidney length (mm) and the right/left volume split (%) of a per-side label map.

    Returns:
        ``kidney_right_length_mm``, ``kidney_left_length_mm`` (for the sides in ``label_map``)
        and, when both kidneys have volume, ``split_right_pct`` (right share of the total
        kidney volume, the split renal volume of nephrology reports); ``{}`` for label maps
        without per-side kidneys (CT: kidney, tumour, cyst).
    """
    sides = {v: n for v, n in label_map.items() if n in ("kidney_right", "kidney_left")}
    if not sides:
        return {}
    arr = np.asarray(mask.array)
    out: dict[str, float] = {}
    counts = {}
    for v, name in sides.items():
        m = arr == v
        counts[name] = int(m.sum())
        out[f"{name}_length_mm"] = round(kidney_length_mm(m, mask.affine), 1)
    if counts.get("kidney_right", 0) > 0 and counts.get("kidney_left", 0) > 0:
        out["split_right_pct"] = round(100.0 * counts["kidney_right"] / (counts["kidney_right"] + counts["kidney_left"]), 1)
    return out
