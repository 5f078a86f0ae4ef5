"""Kidney regions of interest by thresholding at the high-intensity histogram mode, binary
morphology and connected components (seed 001, section 2.1), extended from one
transplanted kidney to two native kidneys.

All arrays here are in the RAS+ canonical orientation (``kidneyseg.io.to_canonical``):
axis 0 grows towards the patient's right, axis 1 anterior, axis 2 superior.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..arrays import bounding_box
from ..specs.base import SpecConfig


@dataclass(frozen=True)
class ROIConfig(SpecConfig):
    """Settings of :func:`detect_kidney_rois`.

    Attributes:
        expected_kidneys: 2 (native kidneys: one box on each side of the body midline) or 1
            (a transplant: the largest component, as in the paper).
        closing_radius: ball radius of the binary closing, in voxels of the finest axis (5).
        opening_radius: ball radius of the binary opening, likewise (4).
        min_component_ml: components smaller than this (after opening) are ignored.
        lateral_range_mm: ``(min, max)`` distance of a kidney candidate's centroid from the
            body midline (native kidneys lie beside the spine, not on it).
        max_component_ml: a chosen component above this is taken as a kidney fused with a
            neighbour of the same brightness (spleen, liver, bowel) and split by a
            distance-transform watershed.
        height_weight: ``expected_kidneys=2``: the left kidney is chosen by posterior
            position plus ``height_weight`` x its height difference (mm, along z) from the
            right kidney's component, chosen first (the right side has no spleen and is
            found reliably). 0 is the plain "most posterior" rule, which picks the spleen
            when it reaches further back than the left kidney (CHAOS cases 10 and 22).
        margin_mm: the box is enlarged by this on every side, per axis (the threshold keeps
            only the brightest part of each kidney).
        histogram_bins: bins of the intensity histogram.
        peak_prominence: a histogram mode counts when its prominence is at least this
            fraction of the histogram's maximum (after Gaussian smoothing, sigma 3 bins).
    """

    expected_kidneys: int = 2
    closing_radius: int = 5
    opening_radius: int = 4
    min_component_ml: float = 5.0
    lateral_range_mm: tuple[float, float] = (20.0, 150.0)
    max_component_ml: float = 200.0
    height_weight: float = 1.0
    margin_mm: tuple[float, float, float] = (15.0, 15.0, 15.0)
    histogram_bins: int = 256
    peak_prominence: float = 0.02

    def __post_init__(self) -> None:
        if self.expected_kidneys not in (1, 2):
            raise ValueError(f"expected_kidneys: expected 1 or 2, got {self.expected_kidneys}")
        if self.closing_radius < 0 or self.opening_radius < 0:
            raise ValueError("closing_radius and opening_radius must be >= 0")
        lo, hi = self.lateral_range_mm
        if not 0 <= lo < hi:
            raise ValueError(f"lateral_range_mm: expected 0 <= min < max, got {self.lateral_range_mm}")
        if self.height_weight < 0:
            raise ValueError(f"height_weight: expected >= 0, got {self.height_weight}")


@dataclass
class KidneyROI:
    """One region of interest.

    Attributes:
        side: ``"right"``, ``"left"`` or ``"single"`` (``expected_kidneys=1``).
        lo_voxel, hi_voxel: inclusive-exclusive box in voxel indices of the canonical grid.
        lo_world_mm, hi_world_mm: the box's corner voxel centres in world RAS+ mm.
        seed: bool mask of the thresholded component inside the box (shape of the box).
        component_ml: volume of that component, mL.
        split: the component was split from a larger one (fused neighbour).
    """

    side: str
    lo_voxel: tuple[int, int, int]
    hi_voxel: tuple[int, int, int]
    lo_world_mm: tuple[float, float, float]
    hi_world_mm: tuple[float, float, float]
    seed: np.ndarray = field(repr=False)
    component_ml: float
    split: bool = False

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index of the box into the canonical volume."""
        return tuple(slice(a, b) for a, b in zip(self.lo_voxel, self.hi_voxel))

    def to_dict(self) -> dict:
        """JSON-ready description (without the seed mask)."""
        return {"side": self.side, "lo_voxel": list(self.lo_voxel), "hi_voxel": list(self.hi_voxel),
                "lo_world_mm": [round(v, 2) for v in self.lo_world_mm],
                "hi_world_mm": [round(v, 2) for v in self.hi_world_mm],
                "component_ml": round(self.component_ml, 2), "split": self.split}


@dataclass
class ROIResult:
    """Outcome of :func:`detect_kidney_rois`.

    Attributes:
        rois: the boxes found (0, 1 or 2).
        threshold: intensity threshold used.
        mode: the high-intensity histogram mode.
        midline_x_mm: world x of the body midline.
        components: number of components after morphology.
    """

    rois: list[KidneyROI]
    threshold: float
    mode: float
    midline_x_mm: float
    components: int


def high_intensity_mode(values: np.ndarray, bins: int = 256, prominence: float = 0.02) -> tuple[float, float]:
    """Highest-intensity mode of a histogram and the lower edge of its peak at half height.

    The histogram covers the values above their median up to their 99.9th percentile, is
    smoothed (Gaussian, sigma 3 bins), and its modes are found with
    ``scipy.signal.find_peaks`` (prominence at least ``prominence`` x the maximum); the
    last one is taken. The threshold is where that peak falls to half its prominence on
    its low side (``scipy.signal.peak_widths``, ``rel_height=0.5``), so the voxels of the
    bright tissue class (on T2 and contrast-enhanced MRI: kidney, spleen, vessels, fluid)
    are kept rather than only its upper half.

    Args:
        values: intensities (any shape; the body's voxels, or the whole volume).
        bins: histogram bins.
        prominence: relative prominence of a mode.

    Returns:
        ``(mode, threshold)`` in the units of ``values``.

    Raises:
        ValueError: fewer than two distinct values above the median.
    """
    from scipy.signal import find_peaks, peak_widths

    v = np.asarray(values, dtype=np.float32).ravel()
    v = v[v > np.median(v)]
    if v.size < 2 or v.min() == v.max():
        raise ValueError("values: fewer than two distinct intensities above the median")
    top = float(np.percentile(v, 99.9))
    hist, edges = np.histogram(v, bins=bins, range=(float(v.min()), top))
    smooth = ndimage.gaussian_filter1d(hist.astype(np.float64), 3)
    smooth = np.concatenate([[0.0], smooth, [0.0]])  # edge modes count as peaks
    peaks, props = find_peaks(smooth, prominence=prominence * smooth.max())
    centres = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    p = int(peaks[-1]) if peaks.size else int(np.argmax(smooth))
    _, _, left, _ = peak_widths(smooth, [p], rel_height=0.5)
    return float(centres[p]), float(np.interp(left[0], np.arange(centres.size), centres))


def ball_mm(radius_voxels: float, spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Ellipsoidal structuring element that is a ball in physical space.

    The ball's radius is ``radius_voxels`` x the finest spacing, in mm; on anisotropic
    voxels it spans fewer voxels along the coarse axes (on 1.25 x 1.25 x 7.7 mm, radius 5
    is 5 x 5 x 0 voxels: a disc; the paper's voxel radius holds in-plane).

    Returns:
        bool array of odd size per axis.
    """
    sp = np.asarray(spacing_mm, dtype=np.float64)
    r_mm = float(radius_voxels) * sp.min()
    half = [int(np.floor(r_mm / s + 1e-9)) for s in sp]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    if r_mm == 0:
        return np.ones([1] * sp.size, dtype=bool)
    return sum((g * s / r_mm) ** 2 for g, s in zip(grids, sp)) <= 1.0 + 1e-9


def _world(affine: np.ndarray, ijk) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(ijk, dtype=np.float64) + affine[:3, 3]


SPLIT_DEPTH_MM = 3.0
"""A distance-transform maximum starts its own piece when it stands this many mm above the
saddle to a neighbouring maximum (h-maxima); shallower bumps belong to the same organ."""


def _split_fused(component: np.ndarray, spacing_mm, anchor_z: float | None) -> tuple[np.ndarray, bool]:
    """Split a component fused with a neighbour by a watershed on its distance transform,
    one basin per h-maximum (``skimage.morphology.h_maxima``, depth :data:`SPLIT_DEPTH_MM`),
    so only organs joined by a neck separate; keep the piece, among those of at least a
    quarter of the largest, whose centroid z is nearest ``anchor_z`` (the other kidney's
    height), or the lowest piece (spleen and liver lie above the kidneys)."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = ndimage.distance_transform_edt(component, sampling=spacing_mm)
    markers, n = ndimage.label(h_maxima(dist, SPLIT_DEPTH_MM), structure=np.ones((3, 3, 3), dtype=bool))
    if n < 2:
        return component, False
    pieces = watershed(-dist, markers, mask=component)
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(component, pieces, idx)
    keep = idx[sizes >= 0.25 * sizes.max()]
    if keep.size < 2:
        return component, False
    zs = np.array([ndimage.center_of_mass(pieces == k)[2] for k in keep])
    best = keep[np.argmin(np.abs(zs - anchor_z))] if anchor_z is not None else keep[np.argmin(zs)]
    return pieces == best, True


def detect_kidney_rois(volume: np.ndarray, affine: np.ndarray, config: ROIConfig = ROIConfig(),
                       midline_x_mm: float | None = None) -> ROIResult:
    """Boxes around the kidneys of a bias-corrected MR volume, without a model.

    Steps (seed 001, section 2.1, and what we add for native kidneys):

    1. threshold at the high-intensity histogram mode (:func:`high_intensity_mode`);
    2. binary closing with a ball of radius ``closing_radius`` then opening with radius
       ``opening_radius`` (``scipy.ndimage``), balls in mm (:func:`ball_mm`) so anisotropic
       voxels get the same physical element;
    3. connected components (26-connected), those below ``min_component_ml`` dropped;
    4. ``expected_kidneys=1``: the largest component (the paper). ``expected_kidneys=2``:
       on each side of the body midline, among components whose centroid lies
       ``lateral_range_mm`` from it, the most posterior one (kidneys are retroperitoneal;
       bowel, gallbladder and most of the spleen lie in front of or above them); on the
       left, a height difference from the right kidney counts against a candidate
       (``height_weight``). A chosen component above ``max_component_ml`` is split
       (watershed on its distance transform) and the piece at the other kidney's height
       is kept;
    5. its bounding box, enlarged by ``margin_mm`` and clipped to the volume.

    Args:
        volume: 3D float array in RAS+ canonical orientation, bias-corrected.
        affine: its ``(4, 4)`` voxel-to-world matrix (RAS+ mm).
        config: :class:`ROIConfig`.
        midline_x_mm: world x of the body midline; ``None`` computes it
            (:func:`kidneyseg.postprocess.body_midline_x_mm`).

    Returns:
        :class:`ROIResult`; ``rois`` is empty when no component qualifies (the caller flags
        ``no_roi``).

    Raises:
        ValueError: not 3D, or an intensity histogram without two distinct values.
    """
    from ..postprocess import body_midline_x_mm

    arr = np.asarray(volume, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"volume: expected 3D, got shape {arr.shape}")
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    if midline_x_mm is None:
        midline_x_mm = body_midline_x_mm(arr, affine)
    mode, thr = high_intensity_mode(arr, config.histogram_bins, config.peak_prominence)
    mask = arr >= thr
    if config.closing_radius:
        mask = ndimage.binary_closing(mask, ball_mm(config.closing_radius, spacing))
    if config.opening_radius:
        mask = ndimage.binary_opening(mask, ball_mm(config.opening_radius, spacing))
    cc, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    result = ROIResult([], thr, mode, float(midline_x_mm), int(n))
    if n == 0:
        return result
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(mask, cc, idx) * voxel_ml
    centroids = np.array(ndimage.center_of_mass(mask, cc, idx)).reshape(-1, 3)
    world = np.array([_world(affine, c) for c in centroids]).reshape(-1, 3)
    ok = sizes >= config.min_component_ml

    chosen: list[tuple[str, int]] = []
    if config.expected_kidneys == 1:
        if ok.any():
            chosen.append(("single", int(idx[ok][np.argmax(sizes[ok])])))
    else:
        offset = world[:, 0] - midline_x_mm  # RAS+: positive is the patient's right
        lo, hi = config.lateral_range_mm
        right_z = None
        for side, sign in (("right", 1.0), ("left", -1.0)):
            cand = ok & (sign * offset >= lo) & (sign * offset <= hi)
            if cand.any():
                cost = world[cand, 1].copy()  # most posterior (RAS+: smaller y is posterior) ...
                if side == "left" and right_z is not None:  # ... at the right kidney's height
                    cost += config.height_weight * np.abs(world[cand, 2] - right_z)
                k = int(idx[cand][np.argmin(cost)])
                chosen.append((side, k))
                if side == "right":
                    right_z = float(world[k - 1, 2])
    comps = {side: cc == k for side, k in chosen}
    del cc
    z_of = {side: float(centroids[k - 1][2]) for side, k in chosen}
    rois = []
    for side, k in chosen:
        comp = comps[side]
        split = False
        if sizes[k - 1] > config.max_component_ml:
            other = [z for s, z in z_of.items() if s != side]
            found = bounding_box(comp)
            box = tuple(slice(a, b) for a, b in zip(*found))
            piece, split = _split_fused(comp[box], spacing, (other[0] - box[2].start) if other else None)
            comp = np.zeros_like(comp)
            comp[box] = piece
        lo_c, hi_c = bounding_box(comp)
        margin = [int(np.ceil(m / s)) for m, s in zip(config.margin_mm, spacing)]
        lo_v = tuple(max(0, a - m) for a, m in zip(lo_c, margin))
        hi_v = tuple(min(d, b + m) for b, m, d in zip(hi_c, margin, arr.shape))
        box = tuple(slice(a, b) for a, b in zip(lo_v, hi_v))
        rois.append(KidneyROI(side, lo_v, hi_v, tuple(_world(affine, lo_v)), tuple(_world(affine, np.array(hi_v) - 1)),
                              comp[box].copy(), float(comp.sum() * voxel_ml), split))
    result.rois = rois
    return result


__all__ = ["ROIConfig", "KidneyROI", "ROIResult", "high_intensity_mode", "ball_mm", "detect_kidney_rois"]
