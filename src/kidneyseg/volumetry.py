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
