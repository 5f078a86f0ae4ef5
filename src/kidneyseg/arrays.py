"""Small array helpers shared by metrics, post-processing, training samplers and inference crops
(NumPy only, so pipelines can use them without importing the training stack)."""

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


def padded_box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Index of the bounding box of the True voxels enlarged by ``margin`` voxels on every side
    and clipped to the array, ``None`` if ``mask`` is empty."""
    box = bounding_box(mask)
    if box is None:
        return None
    return tuple(slice(max(a - margin, 0), min(b + margin, n)) for a, b, n in zip(*box, mask.shape))


def crop_slices(centre: tuple[int, ...], size: tuple[int, ...], shape: tuple[int, ...]):
    """Source and destination slices of a ``size`` crop whose voxel ``size // 2`` sits on
    ``centre`` in a volume of ``shape`` (one entry per axis), or ``None`` when the crop misses
    the volume. The convention of :func:`crop_around` and its inverse
    :func:`kidneyseg.pipelines.c2f_cascade.paste_max`."""
    src, dst = [], []
    for c, p, dim in zip(centre, size, shape):
        a0 = int(c) - p // 2
        s0, s1 = max(a0, 0), min(a0 + p, dim)
        if s1 <= s0:
            return None
        src.append(slice(s0, s1))
        dst.append(slice(s0 - a0, s1 - a0))
    return tuple(src), tuple(dst)


def crop_around(vol: np.ndarray, centre: tuple[int, ...], size: tuple[int, ...], fill: float) -> np.ndarray:
    """Crop the last ``len(size)`` axes of ``vol`` to ``size`` around ``centre`` (leading
    axes kept), padding outside the volume with ``fill``."""
    n = len(size)
    out = np.full(vol.shape[:-n] + tuple(size), fill, dtype=vol.dtype)
    sl = crop_slices(centre, size, vol.shape[-n:])
    if sl is not None:
        out[(Ellipsis, *sl[1])] = vol[(Ellipsis, *sl[0])]
    return out


def largest_components(mask: np.ndarray, keep: int = 1, connectivity: int = 1) -> np.ndarray:
    """The ``keep`` largest connected components of a boolean mask (``scipy.ndimage.label``).

    Args:
        mask: boolean array, any number of dimensions.
        keep: components to keep, largest first (equal sizes: the lower label first).
            ``keep <= 0`` or a mask with at most ``keep`` components: returned unchanged.
        connectivity: ``1`` faces only (6-connectivity in 3D, 4 in 2D), ``mask.ndim`` for
            full connectivity (26 in 3D), as ``scipy.ndimage.generate_binary_structure``.

    Returns:
        bool array of ``mask``'s shape (``mask`` itself when nothing is removed).
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if keep <= 0:
        return mask
    lab, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, connectivity))
    if n <= keep:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    kept = np.argsort(-sizes, kind="stable")[:keep] + 1
    return lab == kept[0] if keep == 1 else np.isin(lab, kept)
