"""Domain randomisation for a contrast-, plane- and thickness-agnostic MR kidney network.

Training images are synthesised from label maps (SynthSeg: Billot et al., Medical Image
Analysis 86, 2023, section 3.1): every label of a *generation* map gets a random mean and
spread per sample, so the network cannot rely on any one contrast and must learn shape and
context. The generation map holds the expert labels (kidney, liver, spleen) and, so that the
background has anatomy-shaped structure, unsupervised tissue classes of the training image (a
Gaussian mixture of its intensities inside the body, scikit-learn ``GaussianMixture``); the
kidney is split into intensity sub-classes too (cortex / medulla / sinus contrast differs
between sequences).

Volumes are resampled to an isotropic grid so that 2D slices can be drawn in any of the
three planes: the network is applied in the acquisition plane of each scan
(:func:`kidneyseg.io.acquisition_axes`).

Label values of the network target (``PlaneVolume.target``):
    0 background, 1 kidney, 2.. auxiliary organs; :data:`NOT_KIDNEY` (labelled, but only known
    not to be kidney: the other organs were not drawn) and :data:`IGNORE` (not labelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

IGNORE = 255
"""Target value of voxels without a label (they add nothing to the loss)."""
NOT_KIDNEY = 254
"""Target value of labelled voxels known not to be kidney when the other organs were not drawn
(the loss uses the summed probability of every non-kidney class there)."""


@dataclass
class PlaneVolume:
    """One training volume on an isotropic canonical (RAS) grid.

    Attributes:
        case_id: the case (patient) id.
        image: float32 ``(X, Y, Z)``, percentile z-scored (as inference normalises).
        target: uint8 ``(X, Y, Z)`` network target (module docstring for the values).
        generation: uint8 ``(X, Y, Z)`` generation label map: 0 outside the body, then tissue
            classes, kidney sub-classes and organs (values only need to be distinct).
        fg: int64 ``(N, 3)`` indices of labelled kidney voxels (foreground oversampling).
        labelled_index: flat indices of the labelled voxels, or ``None`` when every voxel is
            labelled; patches are then only centred on labelled voxels.
        labelled_axis: with ``labelled_index``, the axis across the labelled slices (the thin
            axis of the labelled set): patches are drawn in that plane.
    """

    case_id: str
    image: np.ndarray
    target: np.ndarray
    generation: np.ndarray
    fg: np.ndarray
    labelled_index: np.ndarray | None = None
    labelled_axis: int | None = None


def body_mask(image: np.ndarray) -> np.ndarray:
    """The body (:func:`kidneyseg.postprocess.body_component`) with holes filled slice by slice.

    Returns:
        bool array of ``image``'s shape.
    """
    from ..postprocess import body_component

    body = body_component(image)
    for z in range(body.shape[2]):
        body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    return body


def intensity_classes(values: np.ndarray, n_classes: int, seed: int, max_samples: int = 100_000) -> np.ndarray:
    """Cluster intensities with a 1D Gaussian mixture (scikit-learn ``GaussianMixture``, k-means
    initialisation) and return each value's class, ordered by mean (0 = darkest).

    Args:
        values: 1D intensities.
        n_classes: mixture components (fewer distinct values give fewer classes).
        seed: random state of the fit (sub-sampling and initialisation).

    Returns:
        int64 ``values.shape`` classes in ``0..n_classes-1``.
    """
    from sklearn.mixture import GaussianMixture

    v = np.asarray(values, dtype=np.float64).ravel()
    k = int(min(n_classes, max(1, len(np.unique(v[: 10 * max_samples])))))
    if k == 1 or v.size < 2 * k:
        return np.zeros(v.shape, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fit = v if v.size <= max_samples else v[rng.choice(v.size, max_samples, replace=False)]
    gmm = GaussianMixture(k, random_state=seed, max_iter=200).fit(fit[:, None])
    order = np.argsort(np.argsort(gmm.means_.ravel()))
    return order[gmm.predict(v[:, None])]


def generation_map(image: np.ndarray, organs: np.ndarray, body: np.ndarray, tissue_classes: int,
                   kidney_subclasses: int, seed: int, smoothing_px: int = 0, shell_px: float = 0.0) -> np.ndarray:
    """The label map images are synthesised from.

    Args:
        image: float ``(X, Y, Z)`` intensities.
        organs: uint8 ``(X, Y, Z)``: 0 none, 1 kidney, 2.. other drawn organs.
        body: bool body mask.
        tissue_classes: Gaussian-mixture classes of the body outside the organs.
        kidney_subclasses: Gaussian-mixture classes inside the kidneys.
        seed: random state of the mixtures.
        smoothing_px: if > 0, the tissue classes are cleaned by a 3D majority (mode) filter of
            this radius in voxels (``scipy.ndimage`` rank filter on each class's indicator), so
            the background is made of anatomy-sized regions rather than intensity speckle, as
            SynthSeg's label maps are. Organ labels are never changed.
        shell_px: if > 0, the tissue within this distance (voxels, Euclidean,
            ``scipy.ndimage.distance_transform_edt``) of a kidney voxel becomes one class of its
            own, whatever its mixture class: the perirenal fat, dark in the fat-suppressed
            training scans like the muscle beside it, but bright in T1-weighted, HASTE and
            gradient-echo scans, so it must be free to take any intensity apart from the rest.

    Returns:
        uint8 ``(X, Y, Z)``: 0 outside the body; ``1..tissue_classes`` tissue;
        then ``kidney_subclasses`` kidney classes; then one value per other organ; then, with
        ``shell_px``, the perirenal shell.
    """
    out = np.zeros(image.shape, dtype=np.uint8)
    tissue = body & (organs == 0)
    if tissue.any():
        out[tissue] = 1 + intensity_classes(image[tissue], tissue_classes, seed)
        if smoothing_px > 0:
            size = 2 * smoothing_px + 1
            votes = np.stack([ndimage.uniform_filter((out == c).astype(np.float32), size)
                              for c in range(1, tissue_classes + 1)])
            out[tissue] = 1 + votes[:, tissue].argmax(0).astype(np.uint8)
    kid = organs == 1
    if kid.any():
        out[kid] = 1 + tissue_classes + intensity_classes(image[kid], kidney_subclasses, seed)
    base = 1 + tissue_classes + kidney_subclasses
    others = [v for v in np.unique(organs) if v > 1]
    for j, v in enumerate(others):
        out[organs == v] = base + j
    if shell_px > 0 and kid.any():
        shell = tissue & (ndimage.distance_transform_edt(~kid) <= shell_px)
        out[shell] = base + len(others)
    return out


@dataclass(frozen=True)
class SynthesisRanges:
    """Ranges of the random acquisition (values on a 0..1 intensity scale).

    Attributes:
        std_max: largest within-class standard deviation.
        blur_px_max: largest Gaussian blur (pixels) of the synthesised slice (point spread).
        thickness_mm: slab thickness range: the synthesised slice averages the slices of a
            slab this thick (partial volume across the slice).
        inplane_mm: in-plane resolution range: the slice is downsampled to it and back.
        bias_coeff_max: largest coefficient of MONAI's polynomial bias field (degree 3).
        gamma: range of the gamma exponent.
        noise_std_max: largest Gaussian noise standard deviation.
    """

    std_max: float = 0.08
    blur_px_max: float = 1.0
    thickness_mm: tuple[float, float] = (1.5, 8.0)
    inplane_mm: tuple[float, float] = (1.5, 3.5)
    bias_coeff_max: float = 0.5
    gamma: tuple[float, float] = (0.6, 1.6)
    noise_std_max: float = 0.04


def organ_outline(organs: np.ndarray) -> np.ndarray:
    """The one-pixel line along every organ's border, slice by slice: each pixel with an
    in-plane neighbour (3 x 3) of a higher organ value, i.e. the ring just outside an organ and,
    where two organs touch, the row on the lower-valued side.

    Args:
        organs: integer ``(K, H, W)``: 0 no organ, ``1..`` organ values (kidney, liver, spleen).

    Returns:
        bool ``(K, H, W)``.
    """
    organs = np.asarray(organs)
    return ndimage.maximum_filter(organs, size=(1, 3, 3)) != organs


def synthesise_slice(slab: np.ndarray, rng: np.random.Generator, spacing_mm: float,
                     ranges: SynthesisRanges = SynthesisRanges(), outline: np.ndarray | None = None) -> np.ndarray:
    """A random-contrast image from a slab of a generation label map (SynthSeg's generative
    model, 2D: Billot et al. 2023, section 3.1).

    Each label value draws one mean (uniform 0..1; the background outside the body 0..0.15)
    and one standard deviation per call: every voxel of that label gets that mean plus
    Gaussian noise of that spread. The slab's slices are averaged (slice thickness), the
    result blurred, possibly downsampled in-plane and back (coarse resolution), and multiplied
    by a smooth bias field, gamma-transformed and noised.

    Args:
        slab: integer ``(K, H, W)`` labels, ``K >= 1`` neighbouring slices (the middle one is
            the slice of the target). Not modified.
        rng: the sample's random generator (all randomness comes from it).
        spacing_mm: pixel spacing of the slab, mm.
        ranges: the ranges of the random acquisition.
        outline: optional bool ``(K, H, W)`` (:func:`organ_outline`): these pixels all get one
            dark intensity (uniform 0..0.2) before the slab is averaged: the dark line that
            opposed-phase gradient echo draws where fat meets water (India-ink artefact) and
            chemical shift draws along organ borders, so that an organ as bright as its
            neighbour is still bounded.

    Returns:
        float32 ``(H, W)`` image in about 0..1 (not yet normalised).
    """
    img = _class_intensities(np.asarray(slab), rng, ranges)
    if outline is not None:
        img[np.asarray(outline, bool)] = rng.uniform(0.0, 0.2)
    img = img.mean(axis=0)
    blur = rng.uniform(0.0, ranges.blur_px_max)
    if blur > 0.1:
        img = ndimage.gaussian_filter(img, blur)
    if rng.random() < 0.5:
        res = rng.uniform(*ranges.inplane_mm)
        factor = max(1.0, res / spacing_mm)
        if factor > 1.05:
            img = _down_up(img, [max(2, round(n / factor)) for n in img.shape])
    return _bias_gamma_noise(img, rng, ranges)


def synthesise_volume(labels: np.ndarray, rng: np.random.Generator, spacing_mm: float,
                      ranges: SynthesisRanges = SynthesisRanges()) -> np.ndarray:
    """A random-contrast 3D image from a generation label map (SynthSeg's generative model:
    Billot et al. 2023, section 3.1, in 3D as there).

    Each label value draws one mean (uniform 0..1; the background outside the body 0..0.15)
    and one spread; the volume is blurred, given a random acquisition (with probability 0.8
    thick slices along a random axis, ``ranges.thickness_mm``: averaged over the slice and
    interpolated back, as :class:`torchio.RandomAnisotropy` does), multiplied by a smooth bias
    field, gamma-transformed and noised.

    Args:
        labels: integer ``(X, Y, Z)`` generation labels on an isotropic grid. Not modified.
        rng: the sample's random generator (all randomness comes from it).
        spacing_mm: voxel size of ``labels``, mm.
        ranges: the ranges of the random acquisition.

    Returns:
        float32 ``(X, Y, Z)`` image in about 0..1 (not yet normalised).
    """
    img = _class_intensities(np.asarray(labels), rng, ranges)
    blur = rng.uniform(0.0, ranges.blur_px_max)
    if blur > 0.1:
        img = ndimage.gaussian_filter(img, blur)
    if rng.random() < 0.8:
        axis = int(rng.integers(3))
        factor = rng.uniform(*ranges.thickness_mm) / spacing_mm
        if factor > 1.05:
            small = list(img.shape)
            small[axis] = max(2, round(small[axis] / factor))
            img = _down_up(img, small)
    return _bias_gamma_noise(img, rng, ranges)


def _class_intensities(labels: np.ndarray, rng: np.random.Generator, ranges: SynthesisRanges) -> np.ndarray:
    """SynthSeg's per-label Gaussian: each label value draws a mean (uniform 0..1; label 0,
    outside the body, 0..0.15) and a spread (0..``ranges.std_max``); float32 of ``labels``' shape."""
    n = int(labels.max()) + 1
    means = rng.uniform(0.0, 1.0, n).astype(np.float32)
    means[0] = rng.uniform(0.0, 0.15)
    stds = rng.uniform(0.0, ranges.std_max, n).astype(np.float32)
    return means[labels] + stds[labels] * rng.standard_normal(labels.shape, dtype=np.float32)


def _down_up(img: np.ndarray, small: list[int]) -> np.ndarray:
    """Average ``img`` (2D or 3D) down to ``small`` (``area``) and interpolate it back to its
    own shape (bilinear / trilinear): a coarser acquisition on the same grid."""
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    mode = "bilinear" if img.ndim == 2 else "trilinear"
    t = F.interpolate(F.interpolate(t, size=tuple(small), mode="area"), size=img.shape, mode=mode, align_corners=False)
    return t[0, 0].numpy()


def _bias_gamma_noise(img: np.ndarray, rng: np.random.Generator, ranges: SynthesisRanges) -> np.ndarray:
    """The end of every synthesised acquisition: a smooth multiplicative bias field, the
    image scaled by its peak and gamma-transformed, Gaussian noise; float32."""
    img = img * bias_field(img.shape, rng, ranges.bias_coeff_max)
    img = np.clip(img, 0, None)
    peak = float(img.max())
    if peak > 0:
        img = (img / peak) ** rng.uniform(*ranges.gamma)
    img = img + rng.uniform(0.0, ranges.noise_std_max) * rng.standard_normal(img.shape, dtype=np.float32)
    return img.astype(np.float32)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, coeff_max: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(sum c_ij x^i y^j)``, degree 3, coefficients uniform in
    ``[-coeff_max, coeff_max]`` (the model of MONAI ``RandBiasField`` and TorchIO
    ``RandomBiasField``, drawn from ``rng`` so that a sample depends only on its seed)."""
    from monai.transforms import RandBiasField

    t = RandBiasField(degree=3, coeff_range=(-coeff_max, coeff_max), prob=1.0)
    t.set_random_state(seed=int(rng.integers(2**31)))
    return np.asarray(t(np.ones((1, *shape), np.float32))[0], dtype=np.float32)


def random_intensity_curve(image: np.ndarray, rng: np.random.Generator, points: int = 6) -> np.ndarray:
    """Remap a real image through a random, not necessarily monotone, piecewise-linear curve
    (intensity order between tissues changes, as between T1 and T2 weighting).

    Args:
        image: float32 array (any shape), mapped by its own 0.5/99.5 percentiles to 0..1 first.
        rng: random generator.
        points: control points of the curve.

    Returns:
        float32 array of ``image``'s shape in 0..1.
    """
    lo, hi = np.percentile(image, (0.5, 99.5))
    x = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    values = rng.uniform(0, 1, points)
    values[0] = rng.uniform(0, 0.2)  # air stays dark
    return np.interp(x, np.linspace(0, 1, points), values).astype(np.float32)


def normalise_slice(img: np.ndarray) -> np.ndarray:
    """Clip at the 0.5/99.5 percentiles and z-score, float32 (what inference does per volume,
    :func:`kidneyseg.preprocess.zscore_percentile`; per slice with
    :func:`kidneyseg.inference.predict.normalise_slices`)."""
    from ..preprocess import zscore_percentile

    return zscore_percentile(img, constant_ok=True)  # a constant slice: zeros


def take_plane(vol: np.ndarray, axis: int, index: int, half: int = 0) -> np.ndarray:
    """Slices ``index - half .. index + half`` of ``vol`` along ``axis`` (clamped at the edges),
    as ``(2 * half + 1, A, B)`` with ``(A, B)`` the remaining axes in their order."""
    idx = np.clip(np.arange(index - half, index + half + 1), 0, vol.shape[axis] - 1)
    return np.moveaxis(np.take(vol, idx, axis=axis), axis, 0)
