"""From unsupervised clusters (or any candidate mask) to one kidney mask inside a region of
interest: the kidney-specific selection step of the ``unsupervised-cluster`` pipeline."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def fill_holes_per_slice(mask: np.ndarray, axis: int = -1) -> np.ndarray:
    """Fill holes slice by slice along ``axis`` (``scipy.ndimage.binary_fill_holes``); use the
    coarsest axis (the slice direction).

    In-plane only: with thick slices, a 3D fill cannot close a renal sinus that opens
    towards a neighbouring slice.
    """
    moved = np.moveaxis(np.asarray(mask, dtype=bool), axis, -1)
    out = np.empty_like(moved)
    for z in range(moved.shape[-1]):
        out[..., z] = ndimage.binary_fill_holes(moved[..., z])
    return np.moveaxis(out, -1, axis)


def near_seed(seed: np.ndarray, spacing_mm: tuple[float, ...], radius_mm: float) -> np.ndarray:
    """Bool mask of the voxels within ``radius_mm`` of ``seed`` (Euclidean distance in mm,
    ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing_mm``)."""
    return ndimage.distance_transform_edt(~np.asarray(seed, dtype=bool), sampling=spacing_mm) <= radius_mm


def clamp_to_seed(mask: np.ndarray, seed: np.ndarray, spacing_mm: tuple[float, ...], radius_mm: float,
                  slice_axis: int = -1) -> np.ndarray:
    """``mask`` restricted to :func:`near_seed` (``radius_mm``), then :func:`component_at_seed`.

    Used after the cluster selection: a kidney cluster that also covers a touching organ of
    the same brightness (the spleen above the left kidney, fluid-filled bowel) would otherwise
    carry the mask into it, since the selection keeps whole clusters. In CHAOS case 31 the left
    kidney's mask held 8585 spleen voxels beside 10518 kidney voxels before this step.
    """
    return component_at_seed(mask & near_seed(seed, spacing_mm, radius_mm), seed, slice_axis)


def component_at_seed(mask: np.ndarray, seed: np.ndarray, slice_axis: int = -1) -> np.ndarray:
    """The 26-connected component of ``mask`` that holds most ``seed`` voxels, holes filled
    per slice along ``slice_axis``; all False when no component touches the seed."""
    cc, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    overlap = ndimage.sum_labels(seed, cc, np.arange(1, n + 1))
    if overlap.max() <= 0:
        return np.zeros(mask.shape, dtype=bool)
    return fill_holes_per_slice(cc == (int(np.argmax(overlap)) + 1), slice_axis)


def select_kidney_clusters(labels: np.ndarray, seed: np.ndarray, spacing_mm: tuple[float, ...],
                           radius_mm: float = 10.0, min_fraction: float = 0.5,
                           slice_axis: int | None = None, intensity: np.ndarray | None = None,
                           min_contrast: float = 0.3, seed_share: float | None = None) -> tuple[np.ndarray, list[int]]:
    """Kidney mask from a clustering of a region of interest.

    The paper (seed 001, section 2.2) takes "the first connected component class", which is
    not defined further. Here a cluster is kidney when at least ``min_fraction`` of its
    voxels lie within ``radius_mm`` of the ROI's seed (the thresholded bright component the
    box was built around, :class:`kidneyseg.localize.KidneyROI`). The seed holds only the
    brightest part of the kidney; the radius lets the clusters of its darker rim and medulla
    join while clusters that extend into the surroundings (fat, liver, bowel) stay out. The
    union of kidney clusters is reduced to the component at the seed, holes filled per
    slice (:func:`component_at_seed`).

    With ``intensity``, a kidney cluster must also be bright: its median at least
    ``min_contrast`` of the way from the median of the voxels farther than ``radius_mm``
    from the seed (the surroundings) to the seed's median. This drops the rim cluster the
    3x3x3 receptive field forms just outside a bright organ's edge.

    With ``seed_share``, a cluster is also kidney when it holds at least that fraction of
    the seed voxels in the slices (along ``slice_axis``) it occupies, however far it extends:
    the cluster of the kidney's bright cortex also covers a touching spleen in CHAOS case 34,
    so most of it lies far from the seed and the ``min_fraction`` rule alone drops the whole
    kidney. Use it only when the mask is cut near the seed afterwards
    (:func:`clamp_to_seed`), which the ``unsupervised-cluster`` pipeline does. The contrast
    test still applies.

    The radius (10 mm) and ``min_contrast`` (0.3) were chosen on the three development
    cases (CHAOS 1, 2 and 5; radius among 3, 6, 10 and 15 mm, contrast among none, 0.3,
    0.4 and 0.5); see ``benchmarks/README.md``.

    Args:
        labels: int cluster index per voxel, shape ``(X, Y, Z)`` (2D variant: make cluster
            indices unique per slice before calling).
        seed: bool mask of the same shape.
        spacing_mm: voxel spacing of ``labels``, mm.
        radius_mm: distance from the seed, mm.
        min_fraction: fraction of a cluster's voxels that must lie near the seed.
        slice_axis: axis of the per-slice hole filling; ``None``: the coarsest axis.
        intensity: optional float image of ``labels``' shape (the first channel).
        min_contrast: see above.
        seed_share: see above; ``None`` (default) leaves the rule out.

    Returns:
        ``(mask, clusters)``: bool kidney mask of ``labels``' shape, and the selected cluster
        indices. Both empty when the seed is empty.

    Raises:
        ValueError: shapes differ.
    """
    if labels.shape != seed.shape:
        raise ValueError(f"seed: expected shape {labels.shape}, got {seed.shape}")
    if not seed.any():
        return np.zeros(labels.shape, dtype=bool), []
    if intensity is not None and intensity.shape != labels.shape:
        raise ValueError(f"intensity: expected shape {labels.shape}, got {intensity.shape}")
    near = near_seed(seed, spacing_mm, radius_mm)
    flat = labels.ravel()
    ids, inverse = np.unique(flat, return_inverse=True)
    total = np.bincount(inverse, minlength=ids.size)
    close = np.bincount(inverse, weights=near.ravel(), minlength=ids.size)
    keep = close >= min_fraction * total
    axis = int(np.argmax(spacing_mm)) if slice_axis is None else slice_axis
    if seed_share is not None:
        keep |= _seed_share(labels, seed, inverse, ids.size, axis) >= seed_share
    if intensity is not None:
        values = np.asarray(intensity, dtype=np.float64).ravel()
        cut = contrast_cut(intensity, seed, spacing_mm, radius_mm, min_contrast, near)
        for i in np.flatnonzero(keep):
            if np.median(values[inverse == i]) < cut:
                keep[i] = False
    chosen = ids[keep]
    mask = np.isin(labels, chosen)
    return component_at_seed(mask, seed, axis), [int(c) for c in chosen]


def _seed_share(labels: np.ndarray, seed: np.ndarray, inverse: np.ndarray, n_ids: int, axis: int) -> np.ndarray:
    """Per cluster (index into ``np.unique(labels)``, whose ``return_inverse`` is ``inverse``):
    its seed voxels / the seed voxels of the slices along ``axis`` it occupies."""
    n_slices = labels.shape[axis]
    slice_of = np.broadcast_to(np.arange(n_slices).reshape([-1 if a == axis else 1 for a in range(labels.ndim)]),
                               labels.shape).ravel()
    seed_flat = np.asarray(seed, dtype=bool).ravel()
    occupies = np.zeros((n_ids, n_slices), dtype=bool)
    occupies[inverse, slice_of] = True
    seed_per_slice = np.bincount(slice_of[seed_flat], minlength=n_slices)
    held = np.bincount(inverse[seed_flat], minlength=n_ids)
    available = occupies @ seed_per_slice
    return np.where(available > 0, held / np.maximum(available, 1), 0.0)


def contrast_cut(intensity: np.ndarray, seed: np.ndarray, spacing_mm: tuple[float, ...], radius_mm: float,
                 min_contrast: float, near: np.ndarray | None = None) -> float:
    """Intensity ``min_contrast`` of the way from the surroundings' median (voxels farther than
    ``radius_mm`` from the seed) to the seed's median. ``near`` (the voxels within
    ``radius_mm`` of the seed) is computed when not given."""
    if near is None:
        near = near_seed(seed, spacing_mm, radius_mm)
    values = np.asarray(intensity, dtype=np.float64)
    low = float(np.median(values[~near])) if (~near).any() else float(values.min())
    return low + min_contrast * (float(np.median(values[seed])) - low)


def refine_boundary(mask: np.ndarray, intensity: np.ndarray, seed: np.ndarray, spacing_mm: tuple[float, ...],
                    factors: tuple[int, ...], radius_mm: float = 10.0, min_contrast: float = 0.3) -> np.ndarray:
    """Re-decide the voxels of a mask made at a coarser working resolution along its surface.

    A mask upsampled from blocks of ``factors`` voxels is uncertain by one block at its
    surface (a block half in the kidney is wholly in or out). Voxels within one block of the
    surface (binary dilation minus erosion with a box of 3 voxels along each axis whose
    factor exceeds 1) are set to ``intensity >= cut``, the cut of :func:`contrast_cut`. On
    the three development cases this raised the mean Dice from 0.755 to 0.802.

    Args:
        mask: bool ``(X, Y, Z)`` at full resolution.
        intensity: float image of the same shape.
        seed: bool seed mask of the same shape.
        spacing_mm: full-resolution spacing.
        factors: block factors of the working resolution.
        radius_mm, min_contrast: as in :func:`select_kidney_clusters`.

    Returns:
        bool mask of the same shape (holes and components not yet handled).
    """
    if not mask.any() or all(f == 1 for f in factors):
        return mask
    structure = np.ones(tuple(3 if f > 1 else 1 for f in factors), dtype=bool)
    band = ndimage.binary_dilation(mask, structure) & ~ndimage.binary_erosion(mask, structure)
    cut = contrast_cut(intensity, seed, spacing_mm, radius_mm, min_contrast)
    out = mask.copy()
    out[band] = intensity[band] >= cut
    return out


__all__ = ["fill_holes_per_slice", "near_seed", "clamp_to_seed", "component_at_seed", "select_kidney_clusters", "contrast_cut", "refine_boundary"]
