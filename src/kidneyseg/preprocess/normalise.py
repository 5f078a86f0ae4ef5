"""Intensity normalisation."""

from __future__ import annotations

import numpy as np


def zscore_percentile(array: np.ndarray, lower: float = 0.5, upper: float = 99.5,
                      constant_ok: bool = False) -> np.ndarray:
    """Clip to percentiles, then z-score (zero mean, unit variance).

    The MR scheme of nnU-Net (Isensee et al., Nature Methods 2021) with the CT-style
    percentile clip added so a few hot voxels do not set the scale.

    Args:
        array: any real array (e.g. ``(X, Y, Z)``), not modified.
        lower: lower clipping percentile in [0, 100).
        upper: upper clipping percentile in (lower, 100].
        constant_ok: a constant array (after clipping) gives zeros instead of an error (the
            per-case CT normalisation of ``kits-unet3d``, where a blank crop is not an input error).

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
        if constant_ok:
            return np.zeros_like(a)
        raise ValueError("zscore_percentile: array is constant after percentile clipping")
    a -= float(a.mean())
    a /= std
    return a


def gamma_zscore(array: np.ndarray, gamma: float, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to percentiles, scale to 0..1, raise to ``gamma``, then z-score: the same scan
    at another contrast curve, for intensity test-time augmentation
    (``InferenceConfig.tta_gamma``). ``gamma == 1`` is exactly :func:`zscore_percentile`
    (the z-score undoes the linear scaling, so that path is taken unchanged).

    The gamma step is the one of MONAI's ``AdjustContrast`` (min-max scaled intensities to
    the power gamma), after the percentile clip; written out here because inference does not
    import MONAI (a cached network loads without it, :mod:`kidneyseg.models.compiled`).

    Args:
        array: any real array (e.g. ``(X, Y, Z)``), not modified.
        gamma: the exponent, > 0 (< 1 brightens the dark end, > 1 darkens it).
        lower, upper: clipping percentiles, as :func:`zscore_percentile`.

    Returns:
        float32 array of the same shape.

    Raises:
        ValueError: ``gamma <= 0``, or the array is constant after clipping.
    """
    if not gamma > 0:
        raise ValueError(f"gamma_zscore: gamma must be > 0, got {gamma!r}")
    if gamma == 1.0:
        return zscore_percentile(array, lower, upper)
    a = np.array(array, dtype=np.float32, copy=True)
    lo, hi = np.percentile(a, [lower, upper])
    if hi <= lo:
        raise ValueError("gamma_zscore: array is constant after percentile clipping")
    np.clip(a, lo, hi, out=a)
    a -= lo
    a /= hi - lo
    np.power(a, np.float32(gamma), out=a)
    return zscore_percentile(a, 0.0, 100.0)


def body_median(array: np.ndarray) -> float:
    """Median intensity of the body: the voxels above an Otsu threshold on log intensity.

    MR intensities have no absolute unit, but the body's median is a stable reference:
    the threshold separates air and noise from tissue (log scale, as the two classes
    differ by orders of magnitude), and the median ignores the bright tail (fluid, fat)
    that sets a percentile.

    Args:
        array: any real array (e.g. ``(X, Y, Z)``), not modified; only voxels > 0 count.

    Returns:
        The median, in the array's units (> 0). When every positive voxel has the same value
        (a binary image) there is nothing to threshold and that value is returned.

    Raises:
        ValueError: no positive voxel (no tissue to reference).
    """
    from skimage.filters import threshold_otsu

    a = np.asarray(array)
    positive = a[a > 0].astype(np.float64)
    if positive.size == 0:
        raise ValueError("body_median: no positive intensity")
    if positive.min() == positive.max():
        return float(positive[0])
    logs = np.log(positive)
    body = positive[logs > threshold_otsu(logs)]
    return float(np.median(body))


def clip_body_ratio(array: np.ndarray, ratio: float) -> np.ndarray:
    """Clip intensities above ``ratio`` x :func:`body_median` (a float32 copy).

    The MR counterpart of nnU-Net's CT clipping (Isensee et al., Nature Methods 2021:
    intensities clipped at the 0.5/99.5 percentiles of the training set's foreground): MR
    has no absolute unit, so the bound is expressed relative to each scan's body median
    and learnt from the training kidneys (:func:`foreground_body_ratio`). Tissue brighter
    than any training kidney (a large cyst, a full gallbladder) then no longer sets the
    scale of :func:`zscore_percentile`.

    Args:
        array: any real array, not modified.
        ratio: upper bound as a multiple of the body median, > 0.

    Raises:
        ValueError: ``ratio <= 0``, or no positive tissue (see :func:`body_median`).
    """
    if not ratio > 0:
        raise ValueError(f"clip_body_ratio: ratio must be > 0, got {ratio}")
    a = np.array(array, dtype=np.float32, copy=True)
    np.minimum(a, np.float32(ratio * body_median(a)), out=a)
    return a


def body_ratio(array: np.ndarray, ratio: float) -> np.ndarray:
    """Intensity as a multiple of the body median, clipped at ``ratio``, minus one (a float32 copy).

    ``min(a, ratio x m) / m - 1`` with ``m`` = :func:`body_median`: the body's median tissue
    maps to 0 and air to about -1, and a tissue's value depends only on its brightness
    relative to the body, not on the scan's brightest structure. A z-score (even after
    :func:`clip_body_ratio`) still divides by a standard deviation that a large cyst inflates:
    in CHAOS case 36 (5 % of the volume at the clip) the kidneys sit at z 1.5, against 2.5-3.8
    in the 14 other cases, while their body ratio is 2.7, against 2.9-4.3. The same idea as
    nnU-Net's fixed CT normalisation (Isensee et al., Nature Methods 2021), with the body
    median as the unit because MR has none.

    Args:
        array: any real array (e.g. ``(X, Y, Z)``), not modified.
        ratio: upper bound as a multiple of the body median, > 0 (e.g. the training kidneys'
            :func:`foreground_body_ratio`).

    Returns:
        float32 array of the same shape, in [-1 - |min| / m, ratio - 1].

    Raises:
        ValueError: ``ratio <= 0``, or no positive tissue (see :func:`body_median`).
    """
    if not ratio > 0:
        raise ValueError(f"body_ratio: ratio must be > 0, got {ratio}")
    a = np.array(array, dtype=np.float32, copy=True)
    m = np.float32(body_median(a))
    np.minimum(a, np.float32(ratio) * m, out=a)
    a /= m
    a -= np.float32(1.0)
    return a


def foreground_body_ratio(pairs, percentile: float = 99.5) -> float:
    """Percentile of foreground intensity / body median, pooled over training scans.

    Args:
        pairs: iterable of ``(image, foreground)``: an intensity array and a boolean mask
            of the same shape (e.g. the kidneys).
        percentile: in (0, 100]; 99.5 as nnU-Net's CT fingerprint.

    Returns:
        The pooled percentile (a multiple of the body median).

    Raises:
        ValueError: no foreground voxel in any pair.
    """
    ratios = []
    for image, fg in pairs:
        a = np.asarray(image)
        m = np.asarray(fg, dtype=bool)
        if m.any():
            ratios.append((a[m] / body_median(a)).astype(np.float32))
    if not ratios:
        raise ValueError("foreground_body_ratio: no foreground voxel in any training image")
    return float(np.percentile(np.concatenate(ratios), percentile))
