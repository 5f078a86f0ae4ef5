"""Keep the kidney components and name them right/left from world coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..arrays import bounding_box, largest_components


@dataclass
class KidneyAssignment:
    """Result of :func:`assign_kidneys`.

    Attributes:
        labels: uint8 array, same shape as the input labels.
        kidney_count: number of kept kidney components (0, 1 or 2).
        laterality_source: ``"world_x"`` (two components, named by their world x),
            ``"midline"`` (one component, split or placed by the body midline),
            ``"network"`` (one component, no midline: input labels kept), or ``"none"``.
        network_agreement: fraction of kept kidney voxels whose final label equals the
            input label (meaningful when the network predicts sides; with one "kidney"
            class it is the fraction named right).
        removed_voxels: kidney voxels dropped as small components.
        centroids_world_mm: label name -> world (RAS, mm) centroid of the kept kidney.
        laterality_conflict: two components were kept but both centroids lie on the same
            side of the body midline, so the right/left naming by world x is doubtful (for
            example one of them is not a kidney); a QC flag, nothing is changed.
    """

    labels: np.ndarray
    kidney_count: int
    laterality_source: str
    network_agreement: float
    removed_voxels: int
    centroids_world_mm: dict[str, list[float]] = field(default_factory=dict)
    laterality_conflict: bool = False


MIDLINE_MAX_VOXELS = 32_000_000
"""Above this many voxels the midline is found on an in-plane subsample (memory)."""


def body_component(image: np.ndarray) -> np.ndarray:
    """The body: the largest connected component above Otsu's threshold of
    ``log(1 + I - min I)`` (``skimage.filters.threshold_otsu``, ``scipy.ndimage.label``).
    Otsu on log intensities, because MR intensities are heavy-tailed: on a linear scale a
    large bright structure (fluid, a cyst) can take the "body" class for itself.

    Args:
        image: intensities, any shape and orientation; not modified.

    Returns:
        bool array of ``image``'s shape.
    """
    from skimage.filters import threshold_otsu

    logged = np.log1p(np.asarray(image, dtype=np.float32) - np.float32(image.min()))
    body = logged > threshold_otsu(logged)
    del logged
    return largest_components(body)


def body_midline_x_mm(image: np.ndarray, affine: np.ndarray) -> float:
    """World x (RAS+, mm) of the body's centroid, used as the patient's midline.

    The body is the largest connected component above Otsu's threshold of the log
    intensities, ``log(1 + I - min I)`` (``skimage.filters.threshold_otsu``,
    ``scipy.ndimage.label``). On the 15 CHAOS T2 cases this midline lies within 11 mm of
    the midpoint between the expert's kidney centroids (mean 5 mm); Otsu on the linear
    intensities was off by up to 65 mm (case 36, a large fluid-filled cyst).

    Args:
        image: 3D intensities, any orientation.
        affine: its voxel-to-RAS+ matrix.
    """
    step = 1
    while image[::step, ::step].size > MIDLINE_MAX_VOXELS and step < 8:
        step *= 2  # large volumes: every step-th voxel in-plane (the midline needs mm, not voxels)
    if step > 1:
        image = image[::step, ::step]
        affine = affine @ np.diag([step, step, 1, 1])
    body = body_component(image)
    total = np.count_nonzero(body)
    if total == 0:
        centre = (np.array(image.shape) - 1) / 2
    else:  # centroid from per-axis projections, without an (N, 3) index array
        centre = np.array([np.dot(np.arange(body.shape[ax]), body.sum(axis=tuple(a for a in range(3) if a != ax)))
                           for ax in range(3)], dtype=np.float64) / total
    return float((affine[:3, :3] @ centre + affine[:3, 3])[0])


def split_at_necks(mask: np.ndarray, affine: np.ndarray, depth_mm: float, min_core_ml: float = 1.0) -> np.ndarray:
    """Cut a foreground where it narrows: one region per core deeper than ``depth_mm``.

    Depth is the Euclidean distance to the background in mm
    (``scipy.ndimage.distance_transform_edt`` with the voxel sizes of ``affine``); the cores are
    the 26-connected parts of ``depth >= depth_mm`` holding at least ``min_core_ml`` mL; a
    marker-controlled watershed on the negated depth inside ``mask``
    (``skimage.segmentation.watershed``) gives every foreground voxel to one core, so two bodies
    joined by a bridge thinner than ``2 * depth_mm`` become two regions, cut at the bridge's
    narrowest part. A connected component with no such core is one region, unchanged. Used so that
    a false region joined to a kidney (bowel, spleen) can be dropped without the kidney
    (benchmarks/README.md, "Kidney components split at narrow necks").

    Args:
        mask: bool 3D foreground (any orientation).
        affine: ``(4, 4)`` voxel-to-world mm matrix of its grid (voxel sizes only are used).
        depth_mm: core depth in mm (> 0).
        min_core_ml: smaller cores are not markers (their voxels join a neighbouring region).

    Returns:
        int32 array of ``mask``'s shape: 0 outside ``mask``, regions numbered 1..N.

    Raises:
        ValueError: ``depth_mm`` not positive.
    """
    from skimage.segmentation import relabel_sequential, watershed

    if not depth_mm > 0:
        raise ValueError(f"split_at_necks: depth_mm must be > 0, got {depth_mm}")
    mask = np.asarray(mask, dtype=bool)
    regions = np.zeros(mask.shape, dtype=np.int32)
    found = bounding_box(mask)
    if found is None:
        return regions
    box = tuple(slice(a, b) for a, b in zip(*found))
    m = mask[box]
    spacing, depth = _depth_mm(m, affine)
    full = np.ones((3, 3, 3), dtype=bool)
    cores, n = ndimage.label(depth >= depth_mm, structure=full)
    if n:
        min_voxels = min_core_ml * 1000.0 / float(np.prod(spacing))
        small = np.bincount(cores.ravel(), minlength=n + 1) < min_voxels
        small[0] = False
        cores[small[cores]] = 0
    split = watershed(-depth, markers=cores, mask=m, connectivity=3) if cores.any() else np.zeros(m.shape, np.int32)
    rest, _ = ndimage.label(m & (split == 0), structure=full)  # components without a core: whole
    split = np.where(rest > 0, rest + int(split.max()), split)
    regions[box] = relabel_sequential(split)[0]  # consecutive 1..N, order kept
    return regions


def _depth_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(voxel sizes, depth)``: each voxel's Euclidean distance in mm to the background,
    voxels on the array's edge counted as next to background
    (``scipy.ndimage.distance_transform_edt`` with the voxel sizes of ``affine``)."""
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    return spacing, depth


def assign_kidneys(labels: np.ndarray, affine: np.ndarray, label_map: dict[int, str],
                   midline_x_mm: float | None = None, keep_largest: bool = True,
                   min_second_fraction: float = 0.1, core_depth_mm: float | None = None,
                   regions: np.ndarray | None = None, rank_weights: np.ndarray | None = None) -> KidneyAssignment:
    """Keep at most two kidney components and name them right/left by world position.

    The union of all non-zero labels is split into 3D connected components (26-connectivity,
    ``scipy.ndimage.label``). With ``keep_largest``, the largest component is kept, and the
    second largest too when it has at least ``min_second_fraction`` of the largest's voxels;
    the rest is removed. Sides are then decided in world coordinates (RAS+: larger x is the
    patient's right), never by array index:

    * with ``midline_x_mm`` given, the second component kept is the largest one on the other
      side of the midline from the largest, when the second-largest lies on the same side
      (a false positive beside one kidney must not displace the other kidney: CHAOS case
      36, where a cyst next to the left kidney outgrew the partly found right kidney);
    * two kept components: the one whose centroid has the larger world x is the right kidney;
    * one kept component, with ``midline_x_mm`` given: voxels with world x above the midline
      are right, below are left (a solitary kidney falls wholly on one side; a horseshoe
      kidney is split at the midline);
    * one kept component without a midline: the input's per-side labels are kept
      (``laterality_source="network"``).

    Args:
        labels: integer label array (3D, any orientation): either one "kidney" class (1) or
            per-side values from ``label_map``.
        affine: ``(4, 4)`` voxel-to-RAS+ mm matrix of ``labels``' grid.
        label_map: must name ``kidney_right`` and ``kidney_left``; output values follow it.
        midline_x_mm: world x of the patient's midline (see :func:`body_midline_x_mm`).
        keep_largest: remove all but the two largest components (default).
        min_second_fraction: size ratio below which the second component is noise.
        core_depth_mm: ``None``: "largest" means most voxels. A depth in mm: components are
            ranked by their core, the voxels at least this far inside the component
            (``scipy.ndimage.distance_transform_edt`` in mm from the affine's voxel sizes),
            ties by voxel count. A kidney's parenchyma is over 10 mm thick, so a kidney
            always has a core at 5 mm, while a thin false positive (a rim along a cyst) has
            little or none however many voxels it holds. ``min_second_fraction`` still
            compares voxel counts.
        regions: ``None``: the components are the 26-connected components of the foreground.
            Else an integer array of ``labels``' shape whose values (> 0 on the foreground)
            partition the foreground into the pieces ranked and kept in their place, e.g.
            :func:`split_at_necks`'s regions.
        rank_weights: ``None``: rank as ``core_depth_mm`` says. Else a float array of
            ``labels``' shape (e.g. the kidney probability): pieces are ranked by its sum over
            their voxels (the expected kidney volume), ties by voxel count.

    Returns:
        :class:`KidneyAssignment`.

    Raises:
        ValueError: ``label_map`` lacks ``kidney_right`` or ``kidney_left``; ``regions`` or
            ``rank_weights`` not of ``labels``' shape.
    """
    by_name = {n: v for v, n in label_map.items()}
    if "kidney_right" not in by_name or "kidney_left" not in by_name:
        raise ValueError(f"label_map: expected kidney_right and kidney_left, got {sorted(by_name)}")
    right, left = by_name["kidney_right"], by_name["kidney_left"]
    for name, extra in (("regions", regions), ("rank_weights", rank_weights)):
        if extra is not None and np.shape(extra) != labels.shape:
            raise ValueError(f"assign_kidneys: {name} shape {np.shape(extra)} != labels shape {labels.shape}")
    # work inside the bounding box of the foreground only (exact: every component lies in it)
    found = bounding_box(labels > 0)
    if found is None:
        return KidneyAssignment(np.zeros(labels.shape, dtype=np.uint8), 0, "none", 1.0, 0)
    box = tuple(slice(a, b) for a, b in zip(*found))
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    result = _assign_in_box(labels[box], affine @ shift, right, left, midline_x_mm, keep_largest, min_second_fraction,
                            core_depth_mm, None if regions is None else np.asarray(regions)[box],
                            None if rank_weights is None else np.asarray(rank_weights)[box])
    full = np.zeros(labels.shape, dtype=np.uint8)
    full[box] = result.labels
    result.labels = full
    return result


def _opposite_second(cc: np.ndarray, order: np.ndarray, sizes: np.ndarray, affine: np.ndarray, midline_x_mm: float,
                     min_second_fraction: float, keep: list[int]) -> list[int]:
    """The two kidneys lie on opposite sides of the midline: when the second-ranked
    component (or none) is on the first's side, take instead the first-ranked component whose
    centroid is on the other side, if it has at least ``min_second_fraction`` of the
    first's voxels. Otherwise ``keep`` is returned unchanged. ``order`` is the ranking (by
    voxel count, or by core with ``core_depth_mm``)."""
    big = [int(i) for i in order if sizes[i - 1] >= min_second_fraction * sizes[order[0] - 1]]
    if len(big) < 2:
        return keep  # nothing large enough beside the largest
    centres = ndimage.center_of_mass(cc > 0, cc, big)
    side = [np.sign(float((affine[:3, :3] @ np.asarray(c) + affine[:3, 3])[0]) - midline_x_mm) for c in centres]
    if side[1] != side[0]:  # big[1] is the second-largest, already keep[1]
        return keep
    opposite = [k for k, sd in zip(big[1:], side[1:]) if sd != side[0] and sd != 0]
    return [keep[0], opposite[0]] if opposite else keep


def _assign_in_box(labels: np.ndarray, affine: np.ndarray, right: int, left: int, midline_x_mm: float | None,
                   keep_largest: bool, min_second_fraction: float, core_depth_mm: float | None = None,
                   regions: np.ndarray | None = None, rank_weights: np.ndarray | None = None) -> KidneyAssignment:
    fg = labels > 0
    if regions is None:
        cc, n = ndimage.label(fg, structure=np.ones((3, 3, 3), dtype=bool))
    else:  # the given partition, numbered 1..n on the foreground, order kept
        from skimage.segmentation import relabel_sequential

        cc = relabel_sequential(np.where(fg, regions, 0))[0]
        n = int(cc.max())
    out = np.zeros(labels.shape, dtype=np.uint8)
    if n == 0:
        return KidneyAssignment(out, 0, "none", 1.0, 0)
    sizes = np.bincount(cc.ravel())[1:]
    order = np.argsort(sizes, kind="stable")[::-1] + 1
    if rank_weights is not None and n > 1:
        mass = np.bincount(cc.ravel(), weights=np.asarray(rank_weights, dtype=np.float64).ravel(), minlength=n + 1)[1:]
        order = np.lexsort((-np.arange(n), sizes, mass))[::-1] + 1  # most mass, then most voxels, then lowest index
    elif core_depth_mm is not None and n > 1:
        depth = _depth_mm(fg, affine)[1]
        core = np.bincount(cc[depth >= core_depth_mm], minlength=n + 1)[1:]
        order = np.lexsort((-np.arange(n), sizes, core))[::-1] + 1  # most core, then most voxels, then lowest index
    keep = [int(order[0])]
    if len(order) > 1 and sizes[order[1] - 1] >= min_second_fraction * sizes[order[0] - 1]:
        keep.append(int(order[1]))
    if keep_largest and midline_x_mm is not None and len(order) > 1:
        keep = _opposite_second(cc, order, sizes, affine, midline_x_mm, min_second_fraction, keep)
    if not keep_largest:
        keep = [int(i) for i in order]
    removed = int(fg.sum() - sum(sizes[i - 1] for i in keep))
    conflict = False
    if len(keep) >= 2:
        centres = ndimage.center_of_mass(fg, cc, keep)
        world_x = [float((affine[:3, :3] @ np.asarray(c) + affine[:3, 3])[0]) for c in centres]
        r_idx = int(np.argmax(world_x[:2]))
        conflict = midline_x_mm is not None and (world_x[0] - midline_x_mm) * (world_x[1] - midline_x_mm) > 0
        out[cc == keep[r_idx]] = right
        out[cc == keep[1 - r_idx]] = left
        for extra, x in zip(keep[2:], world_x[2:]):  # only with keep_largest=False
            out[cc == extra] = right if abs(x - world_x[r_idx]) < abs(x - world_x[1 - r_idx]) else left
        source = "world_x"
    elif midline_x_mm is not None:
        sel = cc == keep[0]
        idx = np.argwhere(sel)
        x = idx @ affine[0, :3] + affine[0, 3]
        out[tuple(idx.T)] = np.where(x > midline_x_mm, right, left)
        source = "midline"
    else:
        sel = cc == keep[0]
        out[sel] = labels[sel]
        source = "network"
    kept = out > 0
    agreement = float((out[kept] == labels[kept]).mean()) if kept.any() else 1.0
    centroids = {}
    for v, name in ((right, "kidney_right"), (left, "kidney_left")):
        if (out == v).any():
            c = np.asarray(ndimage.center_of_mass(out == v))
            centroids[name] = [round(float(t), 2) for t in affine[:3, :3] @ c + affine[:3, 3]]
    return KidneyAssignment(out, len(keep), source, agreement, removed, centroids,
                            laterality_conflict=bool(len(keep) >= 2 and conflict))
