"""Kidney localisation by expectation-maximisation tissue classes (seed 000, sections II.B, II.D).

The paper segments the FA map into 12 classes by EM initialised with k-means (7 iterations,
Markov-random-field smoothing 0.05), takes "one of the tissue classes" as the kidney
vicinity, projects it along the slice direction, and crops a rectangle enlarged by 5
pixels on every side, the same on every slice.

Here:

1. **EM**: scikit-learn's :class:`~sklearn.mixture.GaussianMixture` on the voxel values
   inside a body mask (k-means initialisation, ``em_iterations`` EM steps, seeded), classes
   ordered by mean so that a class is named by its *rank* (0 = darkest);
2. **MRF**: dipy's :class:`~dipy.segment.mrf.IteratedConditionalModes` (Potts prior,
   ``mrf_beta``) run on the mixture's per-class negative log-likelihoods until no voxel
   changes (at most ``icm_sweeps``);
3. **kidney class**: the paper picks the class by hand. We make it a setting,
   ``class_ranks = (lo, hi)`` (inclusive ranks taken as kidney vicinity), plus
   ``keep_components`` (how many of the largest 3D connected components of those classes
   to keep, after a one-pixel in-plane opening). :func:`fit_localiser` chooses both on
   training masks: the candidate whose box holds at least ``min_recall`` of each case's
   kidney voxels and has the largest mean box IoU with the reference box. With no training
   masks the defaults below apply; they were chosen on the phantoms, never on a test split;
4. **box**: the kept voxels projected along the slice axis (the axis with the largest
   spacing), their bounding rectangle enlarged by ``margin_px`` (5) on every side, clipped
   to the image, over every slice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ..arrays import largest_components
from ..errors import InputError
from ..specs.base import SpecConfig


@dataclass(frozen=True)
class EMConfig(SpecConfig):
    """Settings of the EM localiser (see the module docstring).

    Attributes:
        n_classes: mixture components (12, section II.B).
        em_iterations: EM steps after the k-means start (7).
        mrf_beta: Potts smoothing of the ICM step (0.05).
        icm_sweeps: maximum ICM sweeps.
        class_ranks: ``(lo, hi)`` inclusive class ranks (0 = lowest mean) taken as kidney.
        keep_components: largest 3D components of those classes kept (0 = all).
        margin_px: pixels added on every side of the projected rectangle (5).
        seed: k-means / subsampling seed.
        max_fit_voxels: voxels sampled to fit the mixture (all voxels are classified).
    """

    n_classes: int = 12
    em_iterations: int = 7
    mrf_beta: float = 0.05
    icm_sweeps: int = 7
    class_ranks: tuple[int, int] = (8, 9)
    keep_components: int = 2
    margin_px: int = 5
    seed: int = 0
    max_fit_voxels: int = 200_000

    def __post_init__(self) -> None:
        lo, hi = self.class_ranks
        if not 0 <= lo <= hi < self.n_classes:
            raise ValueError(f"class_ranks {self.class_ranks}: expected 0 <= lo <= hi < n_classes ({self.n_classes})")
        if self.n_classes < 2 or self.em_iterations < 1 or self.margin_px < 0 or self.keep_components < 0:
            raise ValueError("EMConfig: n_classes >= 2, em_iterations >= 1, margin_px >= 0, keep_components >= 0")


@dataclass(frozen=True)
class Box:
    """An in-plane rectangle applied to every slice.

    Attributes:
        lo: ``(3,)`` first voxel index per array axis (the slice axis: 0).
        hi: ``(3,)`` one past the last voxel index (the slice axis: its length).
        slice_axis: the axis projected along.
    """

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    slice_axis: int

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))

    def world_mm(self, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corners (first and last voxel centres) in world RAS+ mm."""
        lo = affine @ np.r_[self.lo, 1.0]
        hi = affine @ np.r_[np.asarray(self.hi) - 1, 1.0]
        return lo[:3], hi[:3]


def slice_axis_of(spacing_mm: tuple[float, ...]) -> int:
    """The acquisition slice axis: the one with the largest spacing (ties: the last)."""
    s = np.asarray(spacing_mm, dtype=float)
    return int(np.flatnonzero(s >= s.max() - 1e-6)[-1])


def body_mask(volume: np.ndarray) -> np.ndarray:
    """Voxels above an Otsu threshold (scikit-image), holes filled per slice; for a map
    that is zero outside a fitted mask (FA, MD) the non-zero voxels."""
    from skimage.filters import threshold_otsu

    finite = np.isfinite(volume)
    v = volume[finite]
    if v.size == 0 or v.max() == v.min():
        return np.zeros(volume.shape, dtype=bool)
    if np.mean(v == 0) > 0.2:  # a masked map
        return finite & (volume != 0)
    return finite & (volume > threshold_otsu(v))


def em_classes(volume: np.ndarray, mask: np.ndarray | None = None, config: EMConfig = EMConfig()) -> np.ndarray:
    """Classify voxels into ``config.n_classes`` intensity classes (GMM EM + MRF/ICM).

    Args:
        volume: 3D float array (FA, MD, T2, ...), any axis order.
        mask: 3D bool, voxels to classify (default :func:`body_mask`).
        config: :class:`EMConfig`.

    Returns:
        ``int16`` array of the same shape: the class rank (0 = lowest mean) inside the mask,
        -1 outside.

    Raises:
        InputError: not 3D, or fewer voxels in the mask than classes.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise InputError(f"EM localiser: expected a 3D map, got shape {vol.shape}")
    mask = body_mask(vol) if mask is None else np.asarray(mask, dtype=bool) & np.isfinite(vol)
    values = vol[mask]
    if values.size < 10 * config.n_classes or np.ptp(values) == 0:
        raise InputError(f"EM localiser: {values.size} usable voxels; cannot fit {config.n_classes} classes")
    lo, hi = np.percentile(values, [0.5, 99.5])
    x = (np.clip(values, lo, hi) - lo) / max(hi - lo, 1e-12)  # GMM regularisation assumes unit-scale data
    rng = np.random.default_rng(config.seed)
    fit_x = x if x.size <= config.max_fit_voxels else rng.choice(x, config.max_fit_voxels, replace=False)
    gmm = GaussianMixture(config.n_classes, covariance_type="full", max_iter=config.em_iterations,
                          init_params="kmeans", random_state=config.seed, reg_covar=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed iteration count is the method
        gmm.fit(fit_x[:, None])
    order = np.argsort(gmm.means_[:, 0])
    mu = gmm.means_[order, 0]
    var = gmm.covariances_[order, 0, 0]
    logw = np.log(gmm.weights_[order] + 1e-12)
    k = config.n_classes
    # negative log-likelihood per class; outside the mask one extra "outside" class
    nll = np.full(vol.shape + (k + 1,), 1e10, dtype=np.float64)
    inside = 0.5 * np.log(2 * np.pi * var) + 0.5 * (x[:, None] - mu) ** 2 / var - logw
    nll[mask, :k] = inside
    nll[~mask, k] = 0.0
    seg = np.argmin(nll, axis=-1).astype(np.int16)
    if config.mrf_beta > 0:
        from ..optional import require

        require("dipy", "the EM localiser's MRF step (em-unet3d)")
        from dipy.segment.mrf import IteratedConditionalModes

        icm = IteratedConditionalModes()
        for _ in range(config.icm_sweeps):
            new, _ = icm.icm_ising(nll, config.mrf_beta, seg)
            new = np.asarray(new, dtype=np.int16)
            changed = np.any(new != seg)
            seg = new
            if not changed:
                break
    seg[seg == k] = -1
    seg[~mask] = -1
    return seg


def class_mask(ranks: np.ndarray, slice_axis: int, class_ranks: tuple[int, int], keep_components: int) -> np.ndarray:
    """Voxels of the chosen classes after a one-pixel in-plane opening, reduced to the
    ``keep_components`` largest 3D components (6-connectivity: faces)."""
    lo, hi = class_ranks
    sel = (ranks >= lo) & (ranks <= hi)
    structure = np.ones((3, 3, 3), dtype=bool)
    flat = [slice(None)] * 3
    flat[slice_axis] = slice(1, 2)
    in_plane = np.zeros_like(structure)
    in_plane[tuple(flat)] = structure[tuple(flat)]
    sel = ndimage.binary_opening(sel, structure=in_plane)
    return largest_components(sel, keep_components)


def box_from_mask(mask: np.ndarray, slice_axis: int, margin_px: int = 5) -> Box | None:
    """Project ``mask`` along ``slice_axis``; bounding rectangle enlarged by ``margin_px`` on
    every side and clipped to the image; ``None`` for an empty mask."""
    if not mask.any():
        return None
    lo, hi = [], []
    for ax in range(3):
        if ax == slice_axis:
            lo.append(0)
            hi.append(mask.shape[ax])
            continue
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(max(int(idx[0]) - margin_px, 0))
        hi.append(min(int(idx[-1]) + 1 + margin_px, mask.shape[ax]))
    return Box(tuple(lo), tuple(hi), slice_axis)


def localise(volume: np.ndarray, spacing_mm: tuple[float, ...], config: EMConfig = EMConfig(),
             mask: np.ndarray | None = None, ranks: np.ndarray | None = None) -> tuple[Box | None, np.ndarray]:
    """EM localisation of the kidney vicinity in one 3D map.

    Args:
        volume: 3D map (FA for diffusion data, or any intensity image).
        spacing_mm: voxel size per array axis (picks the slice axis).
        config: :class:`EMConfig`.
        mask: body mask (default :func:`body_mask`).
        ranks: precomputed :func:`em_classes` output (skips the EM).

    Returns:
        ``(box, kidney_vicinity)``: the :class:`Box` (``None`` when the chosen classes are
        empty: the caller flags ``no_kidney_class``) and the bool voxels of the kept classes
        (the paper's "EM alone" segmentation).
    """
    axis = slice_axis_of(spacing_mm)
    if ranks is None:
        ranks = em_classes(volume, mask, config)
    vicinity = class_mask(ranks, axis, config.class_ranks, config.keep_components)
    return box_from_mask(vicinity, axis, config.margin_px), vicinity


def box_iou(a: Box, b: Box) -> float:
    inter = np.prod([max(0, min(h1, h2) - max(l1, l2)) for l1, h1, l2, h2 in zip(a.lo, a.hi, b.lo, b.hi)])
    union = np.prod(a.shape) + np.prod(b.shape) - inter
    return float(inter / union) if union else 0.0


def box_recall(box: Box | None, kidneys: np.ndarray) -> float:
    """Fraction of the reference kidney voxels inside ``box``."""
    total = int(np.count_nonzero(kidneys))
    if box is None or total == 0:
        return 0.0
    return float(np.count_nonzero(kidneys[box.slices]) / total)


def fit_localiser(ranks_list: list[np.ndarray], kidneys_list: list[np.ndarray], spacings: list[tuple[float, ...]],
                  config: EMConfig = EMConfig(), min_recall: float = 0.98, max_width: int = 4) -> tuple[EMConfig, dict]:
    """Choose ``class_ranks`` and ``keep_components`` on training cases.

    Each candidate (every range of at most ``max_width`` consecutive ranks, and keeping 1,
    2 or all components) is scored per case by the IoU of its box with the reference box
    (the kidney mask's own projected rectangle with the same margin), counted as 0 when the
    box holds less than ``min_recall`` of the kidney voxels. The best mean wins (ties: the
    smaller mean box).

    Args:
        ranks_list: :func:`em_classes` output per training case.
        kidneys_list: reference masks (non-zero = kidney), same shapes.
        spacings: voxel sizes per case.

    Returns:
        ``(config with the chosen settings, {"score": ..., "recall_ok": ..., "candidates": n})``.

    Raises:
        InputError: no training case, or a case without kidney voxels.
    """
    if not ranks_list:
        raise InputError("fit_localiser: no training cases")
    refs = []
    for kid, sp in zip(kidneys_list, spacings):
        ref = box_from_mask(np.asarray(kid) > 0, slice_axis_of(sp), config.margin_px)
        if ref is None:
            raise InputError("fit_localiser: a training case has no kidney voxels")
        refs.append(ref)
    best, best_key, best_info = config, None, {}
    n = 0
    for lo in range(config.n_classes):
        for hi in range(lo, min(lo + max_width, config.n_classes)):
            masks_by_case = []
            for ranks, sp in zip(ranks_list, spacings):
                axis = slice_axis_of(sp)
                masks_by_case.append(class_mask(ranks, axis, (lo, hi), 0))
            for keep in (1, 2, 0):
                n += 1
                scores, ok, size = [], 0, 0.0
                for sel, kid, ref, sp in zip(masks_by_case, kidneys_list, refs, spacings):
                    box = box_from_mask(largest_components(sel, keep), slice_axis_of(sp), config.margin_px)
                    rec = box_recall(box, np.asarray(kid) > 0)
                    good = rec >= min_recall
                    ok += good
                    scores.append(box_iou(box, ref) if good else 0.0)
                    size += np.prod(box.shape) / np.prod(sel.shape) if box else 1.0
                key = (float(np.mean(scores)), -size)
                if best_key is None or key > best_key:
                    best_key = key
                    best = replace(config, class_ranks=(lo, hi), keep_components=keep)
                    best_info = {"score": key[0], "recall_ok": f"{ok}/{len(scores)}",
                                 "mean_box_fraction": size / len(scores)}
    best_info["candidates"] = n
    return best, best_info


__all__ = ["Box", "EMConfig", "body_mask", "box_from_mask", "box_iou", "box_recall", "class_mask", "em_classes",
           "fit_localiser", "localise", "slice_axis_of"]
