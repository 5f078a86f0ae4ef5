"""Small array helpers shared by metrics and post-processing."""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Inclusive-exclusive bounding box ``(lo, hi)`` of the True voxels, ``None`` if empty."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other) if other else mask)
        if nz.size == 0:
            return None
        lo.append(int(nz[0]))
        hi.append(int(nz[-1]) + 1)
    return tuple(lo), tuple(hi)
