"""Classical unsupervised baselines of seed 001's Table 1, run in the same region of interest
as the clustering: Otsu thresholding and a 3D marker-controlled watershed (scikit-image)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..postprocess.clusters import component_at_seed


def otsu_kidney(roi: np.ndarray, seed: np.ndarray, slice_axis: int = -1) -> np.ndarray:
    """Otsu's threshold of the region of interest, then the component at the seed.

    Args:
        roi: float intensities ``(X, Y, Z)`` of the box (one channel).
        seed: bool mask of the box's thresholded bright component (same shape).
        slice_axis: axis of the per-slice hole filling (the slice direction).

    Returns:
        bool kidney mask of ``roi``'s shape (all False when no voxel passes).

    Source: Otsu, IEEE SMC 9(1) 1979 (``skimage.filters.threshold_otsu``); seed 001 [15].
    """
    from skimage.filters import threshold_otsu

    arr = np.asarray(roi, dtype=np.float32)
    if arr.min() == arr.max():
        return np.zeros(arr.shape, dtype=bool)
    return component_at_seed(arr > threshold_otsu(arr), seed, slice_axis)


def watershed_kidney(roi: np.ndarray, seed: np.ndarray, spacing_mm: tuple[float, ...]) -> np.ndarray:
    """3D marker-controlled watershed on the gradient magnitude.

    Markers: the seed eroded by one voxel (kidney) and the voxels below Otsu's threshold
    eroded by one voxel plus the box's faces (background); the flood runs on the Gaussian
    gradient magnitude (sigma 1 mm, spacing-aware) and the kidney is the basin of the
    kidney marker, holes filled per slice.

    Args:
        roi: float intensities ``(X, Y, Z)`` of the box.
        seed: bool mask of the box's bright component.
        spacing_mm: voxel spacing of the box, mm.

    Returns:
        bool kidney mask of ``roi``'s shape.

    Source: Beucher and Meyer 1993 (``skimage.segmentation.watershed``); seed 001 [6].
    """
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    arr = np.asarray(roi, dtype=np.float32)
    if arr.min() == arr.max() or not seed.any():
        return np.zeros(arr.shape, dtype=bool)
    sigma = [1.0 / s for s in spacing_mm]
    gradient = ndimage.gaussian_gradient_magnitude(arr, sigma=sigma)
    kidney = ndimage.binary_erosion(seed)
    if not kidney.any():
        kidney = seed
    background = ndimage.binary_erosion(arr <= threshold_otsu(arr))
    faces = np.zeros(arr.shape, dtype=bool)
    for axis in range(arr.ndim):
        if arr.shape[axis] > 2:
            idx = [slice(None)] * arr.ndim
            idx[axis] = [0, -1]
            faces[tuple(idx)] = True
    markers = np.zeros(arr.shape, dtype=np.int32)
    markers[(background | faces) & ~seed] = 2
    markers[kidney] = 1
    basins = watershed(gradient, markers)
    return component_at_seed(basins == 1, seed, int(np.argmax(spacing_mm)))


__all__ = ["otsu_kidney", "watershed_kidney"]
