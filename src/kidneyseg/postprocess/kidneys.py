"""Keep the kidney components and name them right/left from world coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass
class KidneyAssignment:
    """Result of :func:`assign_kidneys`.

    Attributes:
        labels: uint8 array, same shape as the input labels.
        kidney_count: number of kept kidney components (0, 1 or 2).
        laterality_source: ``"world_x"`` (two components, named by their world x),
            ``"network"`` (one component: the network's per-voxel labels are kept), or
            ``"none"`` (empty).
        network_agreement: fraction of kept kidney voxels whose final label equals the
            network's label (1.0 when nothing changed; low values mean the network
            confused the sides).
        removed_voxels: kidney voxels dropped as small components.
        centroids_world_mm: label name -> world (RAS, mm) centroid of the kept kidney.
    """

    labels: np.ndarray
    kidney_count: int
    laterality_source: str
    network_agreement: float
    removed_voxels: int
    centroids_world_mm: dict[str, list[float]] = field(default_factory=dict)


def assign_kidneys(labels: np.ndarray, affine: np.ndarray, label_map: dict[int, str],
                   keep_largest: bool = True, min_second_fraction: float = 0.1) -> KidneyAssignment:
    """Keep at most two kidney components and label them by world position.

    The union of all kidney labels is split into 3D connected components (26-connectivity,
    ``scipy.ndimage.label``). With ``keep_largest``, the largest component is kept, and
    the second largest too when it has at least ``min_second_fraction`` of the largest's
    voxels; the rest is removed. Two kept components are named by the world x of their
    centroids (RAS+: the one with larger x is the patient's right kidney), never by array
    index. A single kept component keeps the network's per-voxel labels (a horseshoe
    kidney or a solitary kidney is not forced to one side).

    Args:
        labels: integer label array (any 3D orientation), values from ``label_map`` or 0.
        affine: ``(4, 4)`` voxel-to-RAS+ mm matrix of ``labels``' grid.
        label_map: must name exactly ``kidney_right`` and ``kidney_left``.
        keep_largest: remove components beyond the two largest (default, as the issue asks).
        min_second_fraction: size ratio below which the second component is noise.

    Returns:
        :class:`KidneyAssignment`.

    Raises:
        ValueError: ``label_map`` lacks ``kidney_right`` or ``kidney_left``.
    """
    by_name = {n: v for v, n in label_map.items()}
    if "kidney_right" not in by_name or "kidney_left" not in by_name:
        raise ValueError(f"label_map: expected kidney_right and kidney_left, got {sorted(by_name)}")
    right, left = by_name["kidney_right"], by_name["kidney_left"]
    fg = labels > 0
    cc, n = ndimage.label(fg, structure=np.ones((3, 3, 3), dtype=bool))
    out = np.zeros(labels.shape, dtype=np.uint8)
    if n == 0:
        return KidneyAssignment(out, 0, "none", 1.0, 0)
    sizes = np.bincount(cc.ravel())[1:]
    order = np.argsort(sizes)[::-1] + 1
    keep = [int(order[0])]
    if len(order) > 1 and sizes[order[1] - 1] >= min_second_fraction * sizes[order[0] - 1]:
        keep.append(int(order[1]))
    if not keep_largest:
        keep = [int(i) for i in order]
    removed = int(fg.sum() - sum(sizes[i - 1] for i in keep))
    centres = ndimage.center_of_mass(fg, cc, keep)
    world_x = [float((affine[:3, :3] @ np.asarray(c) + affine[:3, 3])[0]) for c in centres]
    if len(keep) == 2:
        r_idx = int(np.argmax(world_x))
        out[cc == keep[r_idx]] = right
        out[cc == keep[1 - r_idx]] = left
        source = "world_x"
    else:
        for i in keep:
            sel = cc == i
            out[sel] = labels[sel]
        source = "network"
    kept = out > 0
    agreement = float((out[kept] == labels[kept]).mean()) if kept.any() else 1.0
    centroids = {}
    for v, name in ((right, "kidney_right"), (left, "kidney_left")):
        if (out == v).any():
            c = np.asarray(ndimage.center_of_mass(out == v))
            centroids[name] = [round(float(t), 2) for t in affine[:3, :3] @ c + affine[:3, 3]]
    return KidneyAssignment(out, len(keep), source, agreement, removed, centroids)
