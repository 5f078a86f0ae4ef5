"""Register a second MR sequence to the first (SimpleITK), for early fusion as input channels
(seed 001, section 3: the target is the first sequence, the other is warped to it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io import LPS_TO_RAS, Image

METRICS = ("ncc", "mse", "mi")
"""Similarity metrics: normalised cross-correlation, mean squares, Mattes mutual information."""


class RegistrationError(InputError):
    """Registration did not produce a usable transform."""


@dataclass
class Registered:
    """Outcome of :func:`register_to`.

    Attributes:
        image: the moving image resampled on the fixed image's grid (same shape and affine).
        metric: the metric used.
        metric_value: the final metric value of the deformable stage (lower is better in
            SimpleITK's sign convention).
        stop: the optimiser's stop condition.
    """

    image: Image
    metric: str
    metric_value: float
    stop: str


def _to_sitk(image: Image):
    import SimpleITK as sitk

    arr = np.asarray(image.array, dtype=np.float32)
    out = sitk.GetImageFromArray(arr.transpose(2, 1, 0))  # ITK's array order is (z, y, x)
    aff = LPS_TO_RAS @ image.affine  # ITK uses LPS+ world coordinates
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetOrigin(tuple(float(v) for v in aff[:3, 3]))
    out.SetDirection(tuple(float(v) for v in (aff[:3, :3] / spacing).ravel()))
    return out


MAX_SAMPLES = 5_000
"""Default cap on the metric's random samples per resolution level. ``benchmarks/registration.py``
on CHAOS 39, one thread: the whole volume in 14-18 s instead of 320-345 s with 20 % of every
level sampled, for an error about 0.1 mm-equivalent larger (still a third of a millimetre); on
the tests' crop the error is unchanged. elastix's random samplers also use a few thousand."""

SHRINK_FACTORS = (4, 2, 1)
"""Shrink factor of each resolution level (smoothing sigmas 2, 1, 0 voxels)."""


def sampling_percentages(n_voxels: int, max_samples: int | None, percentage: float = 0.2) -> list[float]:
    """Share of the fixed image's voxels the metric samples at each level of
    :data:`SHRINK_FACTORS`: ``percentage``, but at most ``max_samples`` voxels of that level's
    shrunk image (``None``: no cap).

    Args:
        n_voxels: voxels of the full-resolution fixed image.
        max_samples: largest number of samples per level, or ``None``.
        percentage: the share without a cap (0..1].

    Returns:
        one share per level, each in (0, ``percentage``].
    """
    out = []
    for s in SHRINK_FACTORS:
        level = max(1, n_voxels // s**3)
        out.append(percentage if max_samples is None else min(percentage, max_samples / level))
    return out


def _itk_seed(seed: int) -> int:
    """SimpleITK's seed for ``seed``: ITK reads 0 as "seed from the wall clock"
    (``sitk.sitkWallClock``), so a caller's seed 0 would give a different result on every run;
    ``seed + 1`` keeps every caller's seed (>= 0, checked by :func:`register_to`) fixed."""
    return seed + 1


def _method(metric: str, seed: int, percentages: list[float]):
    """A registration method with the settings both stages share: metric, random sampling of
    ``percentages`` per level (seeded), linear interpolation, shrink 4/2/1 with smoothing
    2/1/0 voxels."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    if metric == "ncc":
        reg.SetMetricAsCorrelation()
    elif metric == "mse":
        reg.SetMetricAsMeanSquares()
    else:
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(percentages, _itk_seed(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    return reg


def register_to(fixed: Image, moving: Image, metric: str = "mi", mesh_size: tuple[int, int, int] = (4, 4, 2),
                iterations: int = 50, seed: int = 0, max_samples: int | None = MAX_SAMPLES) -> Registered:
    """Warp ``moving`` onto ``fixed``: a rigid stage then a B-spline deformable stage.

    Both images are placed in world space by their affines, so a moving image of another
    grid, orientation or field of view is handled; the rigid stage starts from the
    images' geometric centres. Each stage is multi-resolution (shrink 4, 2, 1; smoothing
    2, 1, 0 voxels), samples 20 % of each level's voxels at random, at most ``max_samples``
    (``seed``), and optimises with
    SimpleITK's regular-step gradient descent (rigid) and L-BFGS-B (B-spline). The warped
    image is resampled with linear interpolation on the fixed grid; outside the moving
    image's field of view it is 0.

    Args:
        fixed: 3D target :class:`~kidneyseg.io.Image` (the primary sequence).
        moving: 3D :class:`~kidneyseg.io.Image` to warp (the secondary sequence).
        metric: ``"ncc"``, ``"mse"`` (same contrast only) or ``"mi"`` (default: works across
            contrasts).
        mesh_size: B-spline control grid over the fixed image, per axis.
        iterations: optimiser iterations per level and stage.
        seed: seed of the metric's random sampling, >= 0 (the same result on every run; see
            :func:`_itk_seed`).
        max_samples: cap on the metric's samples per level (:func:`sampling_percentages`);
            ``None`` samples 20 % of every level, as before 2026-12-03: about 20 times slower
            on a whole abdominal MR and slightly more accurate (:data:`MAX_SAMPLES`).

    Returns:
        :class:`Registered`.

    Raises:
        ValueError: unknown metric, an image that is not 3D, or a negative seed.
        RegistrationError: SimpleITK failed, the metric is not finite, or the images do not
            overlap after registration.

    Source: SimpleITK ``ImageRegistrationMethod``; seed 001 section 3 (metrics NCC, MSE, MI).
    """
    import SimpleITK as sitk

    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    if fixed.ndim != 3 or moving.ndim != 3:
        raise ValueError(f"expected 3D images, got shapes {fixed.shape} and {moving.shape}")
    if seed < 0:
        raise ValueError(f"seed: expected >= 0, got {seed}")
    percentages = sampling_percentages(int(np.prod(fixed.shape)), max_samples)
    f = _to_sitk(fixed)
    m = _to_sitk(moving)
    try:
        rigid = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.GEOMETRY)
        reg = _method(metric, seed, percentages)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=iterations)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(rigid, inPlace=True)
        reg.Execute(f, m)
        m_rigid = sitk.Resample(m, f, rigid, sitk.sitkLinear, 0.0, sitk.sitkFloat32)

        bspline = sitk.BSplineTransformInitializer(f, list(mesh_size))
        reg2 = _method(metric, seed, percentages)
        reg2.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations)
        reg2.SetInitialTransform(bspline, inPlace=True)
        reg2.Execute(f, m_rigid)
        value = float(reg2.GetMetricValue())
        stop = reg2.GetOptimizerStopConditionDescription()
        warped = sitk.Resample(m_rigid, f, bspline, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    except RuntimeError as exc:  # SimpleITK raises RuntimeError with a multi-line message
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RegistrationError(f"{moving.source or 'secondary'}: registration to {fixed.source or 'primary'} failed ({first})") from None
    arr = sitk.GetArrayFromImage(warped).transpose(2, 1, 0)
    if not np.isfinite(value) or not np.isfinite(arr).all():
        raise RegistrationError(f"{moving.source or 'secondary'}: registration failed (metric {value})")
    if np.count_nonzero(arr) < 0.1 * arr.size:
        raise RegistrationError(f"{moving.source or 'secondary'}: after registration it covers under 10% of "
                                f"{fixed.source or 'the primary image'} (different anatomy or field of view?)")
    return Registered(fixed.with_array(np.ascontiguousarray(arr, dtype=np.float32)), metric, value, stop)


__all__ = ["MAX_SAMPLES", "METRICS", "Registered", "RegistrationError", "register_to", "sampling_percentages"]
