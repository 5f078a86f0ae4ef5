"""Dataset fingerprint and experiment plan for the CT pipelines (issue 6), nnU-Net style.

A *fingerprint* summarises a training set: every case's shape and voxel spacing in the
canonical RAS axis order (read through the affine, so KiTS19's (z, y, x) files with an IPL
affine give the same numbers as a RAS file of the same scan), the foreground fraction and,
when images are present, intensity percentiles of the foreground voxels (CT: HU).

A *plan* turns it into training settings, following the rules nnU-Net describes
(Isensee et al., Nature Methods 18, 2021, "fixed, rule-based and empirical parameters"):

* target spacing: the median spacing per axis; for anisotropic data (largest / smallest
  median spacing > 3) the coarse axis takes the 10th percentile of its spacings instead,
  but never finer than the other axes. Seed 002 fixes 1.99 mm isotropic
  (``target_spacing_mm=(1.99, 1.99, 1.99)``).
* topology: at each level an axis is pooled (stride 2) while its feature map stays at least
  ``min_feature_map`` (4) voxels and its current spacing is at most twice the finest one;
  its kernel is 3 unless its spacing is more than twice the finest (then 1, in-plane
  convolution until the spacings meet). At most ``max_pooling`` levels.
* patch: starts at the median resampled shape (at most ``max_patch_voxels`` voxels, with the
  axes in proportion to their physical extent) and shrinks the axis that is largest relative
  to the median shape until the estimated training memory fits ``memory_budget_gb``; each
  axis is a multiple of its total pooling factor.
* filters: ``base_filters`` doubling per level, at most ``max_filters``;
* batch: 2, raised while memory allows, but a batch never covers more than 5 % of the
  dataset's voxels (nnU-Net's cap).
* normalisation (CT): clip to the 0.5th / 99.5th percentile of the foreground intensities of
  the whole dataset, then z-score with the foreground mean and std; or, as seed 002 does,
  per case (``"case_percentile"``).

The memory estimate is a formula calibrated against measured peak memory of MONAI's
``DynUNet`` (forward + backward, deep supervision) on CPU: ``benchmarks/plan_memory.py``
checks it. A plan that cannot fit the budget even at the smallest patch raises before any
training starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from .datasets.layouts import Case, check_label_values
from .errors import InputError

ANISOTROPY_RATIO = 3.0
"""Largest / smallest median spacing above which the coarse axis gets its 10th percentile."""

BYTES_PER_ACTIVATION = 4 * 13.5
"""float32 bytes per (feature x voxel) of each level, forward and backward together: the
calibration constant of :func:`estimate_memory_gb` (``benchmarks/plan_memory.py``)."""

OVERHEAD_GB = 0.95
"""Fixed memory of the training process (interpreter, torch, MONAI, data in flight)."""


@dataclass(frozen=True)
class CaseFingerprint:
    """Geometry (and optional intensities) of one case, axes in canonical RAS order.

    Attributes:
        case_id: the case's id.
        shape: voxels along R, A, S (canonical axis order, whatever the file's order).
        spacing_mm: voxel size along R, A, S in mm.
        foreground_fraction: share of voxels with a non-zero label (``nan`` if not read).
        labels_present: label values found in the mask (``()`` if not read).
    """

    case_id: str
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    foreground_fraction: float = float("nan")
    labels_present: tuple[int, ...] = ()


@dataclass(frozen=True)
class DatasetFingerprint:
    """Summary of a training set (see the module docstring).

    Attributes:
        cases: per-case fingerprints.
        foreground_intensity: ``{"p00_5", "p99_5", "mean", "std", "median"}`` of the foreground
            voxels pooled over cases (intensity units of the images, HU for CT), or ``{}``
            when no image was read.
        modality: free text, e.g. ``"CT"``.
    """

    cases: tuple[CaseFingerprint, ...]
    foreground_intensity: dict[str, float] = field(default_factory=dict)
    modality: str = "CT"

    @property
    def spacings(self) -> np.ndarray:
        """``(n_cases, 3)`` float array of RAS spacings in mm."""
        return np.array([c.spacing_mm for c in self.cases], float)

    @property
    def shapes(self) -> np.ndarray:
        """``(n_cases, 3)`` int array of RAS shapes."""
        return np.array([c.shape for c in self.cases], int)

    @property
    def median_spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.median(self.spacings, axis=0))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {"modality": self.modality, "n_cases": len(self.cases), "median_spacing_mm": self.median_spacing_mm,
                "foreground_intensity": self.foreground_intensity, "cases": [asdict(c) for c in self.cases]}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetFingerprint":
        cases = tuple(CaseFingerprint(c["case_id"], tuple(c["shape"]), tuple(c["spacing_mm"]),
                                      float(c.get("foreground_fraction", float("nan"))),
                                      tuple(c.get("labels_present", ()))) for c in d["cases"])
        return cls(cases, dict(d.get("foreground_intensity", {})), d.get("modality", "CT"))


def _canonical_geometry(img: nib.spatialimages.SpatialImage, path: Path) -> tuple[np.ndarray, tuple, tuple]:
    """(ornt, RAS shape, RAS spacing) from a NIfTI header; no voxel data read."""
    from .io.readers import check_nifti_spacing

    if len(img.shape) != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {tuple(img.shape)}")
    check_nifti_spacing(img, path)
    affine = img.affine
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{path}: missing or invalid voxel spacing {spacing.tolist()}")
    ornt = nib.io_orientation(affine)
    order = np.argsort(ornt[:, 0])  # file axis that becomes R, A, S
    shape = tuple(int(img.shape[i]) for i in order)
    return ornt, shape, tuple(round(float(spacing[i]), 6) for i in order)


def fingerprint(cases: Sequence[Case], read_labels: bool = True, read_images: bool = True,
                samples_per_case: int = 20000, seed: int = 0, modality: str = "CT") -> DatasetFingerprint:
    """Fingerprint a dataset (see the module docstring).

    Args:
        cases: from :func:`kidneyseg.datasets.layouts.list_cases` (any layout).
        read_labels: read the masks for foreground fraction and label values (else only
            headers are read).
        read_images: sample foreground intensities of cases that have an image.
        samples_per_case: foreground voxels drawn per case (seeded) for the percentiles.
        modality: stored in the fingerprint.

    Raises:
        InputError: a file that is not 3D, has no valid spacing, an image and mask of
            different geometry, or a label value outside the dataset's label map
            (each message names the file).
    """
    if not cases:
        raise InputError("fingerprint: no cases")
    rng = np.random.default_rng(seed)
    out, samples = [], []
    for case in cases:
        lab = nib.load(str(case.label))
        _, shape, spacing = _canonical_geometry(lab, case.label)
        frac, present = float("nan"), ()
        mask = None
        if read_labels or (read_images and case.image is not None):
            mask = np.asanyarray(lab.dataobj)
            values = np.unique(mask)
            check_label_values(case, values)
            present = tuple(int(v) for v in values if v != 0)
            frac = float(np.count_nonzero(mask)) / mask.size
        if read_images and case.image is not None:
            img = nib.load(str(case.image))
            if img.shape != lab.shape or not np.allclose(img.affine, lab.affine, atol=1e-3):
                raise InputError(f"{case.image}: image and {case.label.name} differ in shape or affine")
            fg = np.flatnonzero(mask)
            if fg.size:
                pick = rng.choice(fg, size=min(samples_per_case, fg.size), replace=False)
                data = np.asarray(img.dataobj, dtype=np.float32).ravel()
                samples.append(data[pick])
        out.append(CaseFingerprint(case.case_id, shape, spacing, frac, present))
    intensity: dict[str, float] = {}
    if samples:
        v = np.concatenate(samples)
        intensity = {"p00_5": float(np.percentile(v, 0.5)), "p99_5": float(np.percentile(v, 99.5)),
                     "median": float(np.median(v)), "mean": float(v.mean()), "std": float(v.std())}
    return DatasetFingerprint(tuple(out), intensity, modality)


@dataclass(frozen=True)
class Plan:
    """A typed, JSON-serialisable training plan for a 3D U-Net (MONAI ``DynUNet``).

    All per-axis tuples are in canonical RAS order (R, A, S).

    Attributes:
        target_spacing_mm: resampling target.
        median_shape: median case shape after resampling.
        patch_size: training patch (voxels); divisible by the pooling product per axis.
        kernel_sizes: one ``(kR, kA, kS)`` per level (DynUNet ``kernel_size``).
        strides: one per level, the first ``(1, 1, 1)`` (DynUNet ``strides``).
        filters: feature maps per level.
        batch_size: patches per step.
        deep_supervision_levels: decoder outputs supervised below the full resolution; the
            loss weights halve per level (seed 002, section 2.2).
        normalisation: ``"ct_clip_zscore"`` (dataset foreground percentiles and moments) or
            ``"case_percentile"`` (seed 002: per-case 0.5 / 99.5 percentile clip, z-score).
        clip: ``(low, high)`` intensity clip for ``ct_clip_zscore``.
        mean, std: foreground moments for ``ct_clip_zscore``.
        memory_budget_gb: the budget the plan was made for.
        estimated_memory_gb: :func:`estimate_memory_gb` of this plan.
    """

    target_spacing_mm: tuple[float, float, float]
    median_shape: tuple[int, int, int]
    patch_size: tuple[int, int, int]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    strides: tuple[tuple[int, int, int], ...]
    filters: tuple[int, ...]
    batch_size: int
    deep_supervision_levels: int
    normalisation: str
    clip: tuple[float, float] | None
    mean: float | None
    std: float | None
    memory_budget_gb: float
    estimated_memory_gb: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"plan: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        for k in ("target_spacing_mm", "median_shape", "patch_size", "filters"):
            d[k] = tuple(d[k])
        for k in ("kernel_sizes", "strides"):
            d[k] = tuple(tuple(v) for v in d[k])
        if d.get("clip") is not None:
            d["clip"] = tuple(d["clip"])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from .io.writers import write_json

        write_json({"plan": self.to_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text())["plan"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{p}: not a kidneyseg plan ({e})") from None

    def replace(self, **changes) -> "Plan":
        """A copy with fields overridden (the user's overrides); memory is re-estimated."""
        d = self.to_dict() | changes
        new = Plan.from_dict(d)
        check_topology(new)
        est = estimate_memory_gb(new.patch_size, new.filters, new.strides, new.batch_size)
        return Plan.from_dict(new.to_dict() | {"estimated_memory_gb": round(est, 2)})


def check_topology(plan: Plan) -> None:
    """Raise :class:`InputError` if the patch is not divisible by the pooling per axis."""
    total = np.prod(np.array(plan.strides), axis=0)
    if len(plan.kernel_sizes) != len(plan.strides) or len(plan.filters) != len(plan.strides):
        raise InputError("plan: kernel_sizes, strides and filters need one entry per level")
    bad = [a for a in range(3) if plan.patch_size[a] % total[a]]
    if bad:
        raise InputError(f"plan: patch_size {plan.patch_size} is not divisible by the pooling "
                         f"{tuple(int(t) for t in total)} on axis {bad}")


def estimate_memory_gb(patch_size: Sequence[int], filters: Sequence[int], strides: Sequence[Sequence[int]],
                       batch_size: int) -> float:
    """Estimated peak memory (GB) of one DynUNet training step.

    ``OVERHEAD_GB + 4 * 4 * n_params / 1e9`` (weights, gradients, optimiser state) plus
    ``BYTES_PER_ACTIVATION * batch * sum_level(filters_l * voxels_l)`` for the activations
    kept for the backward pass (encoder and decoder). Calibrated on CPU against measured peak
    resident memory (``benchmarks/plan_memory.py``); on CUDA cuDNN workspaces add to it.
    """
    voxels = float(np.prod(patch_size))
    act = 0.0
    params = 0.0
    prev = 1
    for level, (f, s) in enumerate(zip(filters, strides)):
        voxels /= float(np.prod(s))
        act += f * voxels
        params += 27 * f * (prev + f) * (2 if level else 1)  # two convs per block, decoder alike
        prev = f
    return OVERHEAD_GB + (16.0 * params + BYTES_PER_ACTIVATION * batch_size * act) / 1e9


def _topology(patch: np.ndarray, spacing: np.ndarray, min_feature_map: int, max_pooling: int
              ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    kernels, strides = [], [(1, 1, 1)]
    size = patch.astype(float).copy()
    sp = spacing.astype(float).copy()
    kernels.append(tuple(3 if sp[a] <= 2 * sp.min() else 1 for a in range(3)))
    for _ in range(max_pooling):
        pool = [(size[a] / 2 >= min_feature_map) and (sp[a] <= 2 * sp.min()) for a in range(3)]
        if not any(pool):
            break
        stride = tuple(2 if p else 1 for p in pool)
        size = size / np.array(stride)
        sp = sp * np.array(stride)
        strides.append(stride)
        kernels.append(tuple(3 if sp[a] <= 2 * sp.min() else 1 for a in range(3)))
    return kernels, strides


def _target_spacing(fp: DatasetFingerprint) -> np.ndarray:
    sp = fp.spacings
    target = np.median(sp, axis=0)
    coarse = int(np.argmax(target))
    others = [a for a in range(3) if a != coarse]
    if target[coarse] > ANISOTROPY_RATIO * target.min():
        target[coarse] = max(np.percentile(sp[:, coarse], 10), target[others].max())
    return target


def make_plan(fp: DatasetFingerprint, memory_budget_gb: float = 8.0,
              target_spacing_mm: Sequence[float] | None = None, base_filters: int = 32,
              max_filters: int = 320, min_feature_map: int = 4, max_pooling: int = 5,
              max_patch_voxels: int = 128 ** 3, normalisation: str = "ct_clip_zscore",
              deep_supervision_levels: int = 2) -> Plan:
    """Plan a 3D U-Net training from a fingerprint (rules in the module docstring).

    Args:
        fp: from :func:`fingerprint`.
        memory_budget_gb: memory one training step may use (GPU memory on CUDA, RAM on CPU).
        target_spacing_mm: override (R, A, S) in mm, e.g. seed 002's ``(1.99, 1.99, 1.99)``.
        normalisation: ``"ct_clip_zscore"`` (needs image intensities in ``fp``) or
            ``"case_percentile"``.

    Returns:
        a :class:`Plan`.

    Raises:
        InputError: the smallest patch (one bottleneck of ``min_feature_map`` voxels per axis,
            batch 2) does not fit the budget; ``ct_clip_zscore`` without intensities; an
            invalid target spacing.
    """
    if normalisation not in ("ct_clip_zscore", "case_percentile"):
        raise InputError(f"normalisation: expected ct_clip_zscore or case_percentile, got {normalisation!r}")
    if normalisation == "ct_clip_zscore" and not fp.foreground_intensity:
        raise InputError("plan: ct_clip_zscore needs foreground intensities; fingerprint a dataset with "
                         "images, or use normalisation='case_percentile'")
    if target_spacing_mm is not None:
        target = np.asarray(target_spacing_mm, float)
        if target.shape != (3,) or np.any(~np.isfinite(target)) or np.any(target <= 0):
            raise InputError(f"target_spacing_mm: expected three positive values, got {list(target_spacing_mm)}")
    else:
        target = _target_spacing(fp)
    extent_mm = fp.shapes * fp.spacings
    median_shape = np.maximum(np.round(np.median(extent_mm / target, axis=0)), 1).astype(int)
    # start: physical proportions of the median case, at most max_patch_voxels
    patch = median_shape.astype(float)
    if patch.prod() > max_patch_voxels:
        patch = patch * (max_patch_voxels / patch.prod()) ** (1 / 3)
    patch = np.minimum(np.maximum(np.floor(patch), min_feature_map), median_shape.max())

    def fit(p: np.ndarray) -> tuple[np.ndarray, list, list, list]:
        kernels, strides = _topology(p, target, min_feature_map, max_pooling)
        total = np.prod(np.array(strides), axis=0)
        p = np.maximum(np.floor(p / total), 1) * total
        filters = [min(base_filters * 2 ** i, max_filters) for i in range(len(strides))]
        return p.astype(int), kernels, strides, filters

    patch_i, kernels, strides, filters = fit(patch)
    while estimate_memory_gb(patch_i, filters, strides, 2) > memory_budget_gb:
        total = np.prod(np.array(strides), axis=0)
        for axis in np.argsort(-(patch_i / median_shape), kind="stable"):
            smaller = patch_i.copy()
            smaller[axis] -= total[axis]
            if smaller[axis] >= min_feature_map:
                break
        else:
            need = estimate_memory_gb(patch_i, filters, strides, 2)
            raise InputError(f"plan: even a {tuple(int(v) for v in patch_i)} patch needs about {need:.1f} GB "
                             f"at batch 2, more than the {memory_budget_gb:g} GB budget")
        patch_i, kernels, strides, filters = fit(smaller.astype(float))
    batch = 2
    dataset_voxels = float(np.sum(np.prod(extent_mm / target, axis=1)))
    cap = max(2, int(0.05 * dataset_voxels / float(np.prod(patch_i))))
    while batch + 1 <= cap and estimate_memory_gb(patch_i, filters, strides, batch + 1) <= memory_budget_gb:
        batch += 1
    clip = mean = std = None
    if normalisation == "ct_clip_zscore":
        fi = fp.foreground_intensity
        clip, mean, std = (fi["p00_5"], fi["p99_5"]), fi["mean"], max(fi["std"], 1e-6)
    levels = min(deep_supervision_levels, max(len(strides) - 2, 0))
    plan = Plan(tuple(round(float(t), 4) for t in target), tuple(int(v) for v in median_shape),
                tuple(int(v) for v in patch_i), tuple(tuple(int(k) for k in ks) for ks in kernels),
                tuple(tuple(int(s) for s in st) for st in strides), tuple(filters), batch, levels,
                normalisation, clip, mean, std, float(memory_budget_gb),
                round(estimate_memory_gb(patch_i, filters, strides, batch), 2))
    check_topology(plan)
    return plan
