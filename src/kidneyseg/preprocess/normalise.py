"""Intensity normalisation."""

from __future__ import annotations

import numpy as np


def zscore_percentile(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to percentiles, then z-score (zero mean, unit variance).

    The MR scheme of nnU-Net (Isensee et al., Nature Methods 2021) with the CT-style
    percentile clip added so a few hot voxels do not set the scale.

    Args:
        array: any real array (e.g. ``(X, Y, Z)``), not modified.
        lower: lower clipping percentile in [0, 100).
        upper: upper clipping percentile in (lower, 100].

    Returns:
        float32 array of the same shape.

    Raises:
        ValueError: the array is constant after clipping (std 0).
    """
    a = np.array(array, dtype=np.float32, copy=True)  # the one working copy; the input is untouched
    lo, hi = np.percentile(a, [lower, upper])
    np.clip(a, lo, hi, out=a)
    std = float(a.std())
    if std == 0.0:
        raise ValueError("zscore_percentile: array is constant after percentile clipping")
    a -= float(a.mean())
    a /= std
    return a
