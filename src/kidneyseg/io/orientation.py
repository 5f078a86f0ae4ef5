"""Reorientation between a file's voxel axes and the canonical RAS+ axes. The one module
that knows about world conventions.

Conventions (NIfTI / nibabel): world coordinates are RAS+, in mm: world x increases
towards the patient's Right, y towards Anterior, z towards Superior (so the liver and the
right kidney have larger x than the spleen and the left kidney). DICOM uses LPS+ (x towards Left, y towards Posterior): converting
between them negates x and y (:data:`LPS_TO_RAS`).

The canonical voxel orientation of kidneyseg models is RAS: array axis 0 runs towards the
patient's right, axis 1 towards anterior, axis 2 towards superior. Reorientation permutes
and flips axes only (no resampling, :func:`nibabel.orientations.io_orientation` picks the
closest axes for an oblique affine), so it is lossless and exactly invertible.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from .image import Image

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Matrix converting a DICOM/ITK (LPS+) affine to NIfTI (RAS+), and back (it is its own inverse)."""

_RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class Reorientation:
    """How an image's voxel axes map onto the canonical RAS axes.

    Attributes:
        ornt: nibabel orientation array ``(3, 2)``: for each original axis, the canonical
            axis it becomes and whether it is flipped.
        original_shape: shape of the original array ``(X, Y, Z)``.
        original_axcodes: e.g. ``("L", "A", "S")`` for CHAOS, ``("I", "P", "L")`` for KiTS19.
    """

    ornt: np.ndarray
    original_shape: tuple[int, int, int]
    original_axcodes: tuple[str, str, str]


def axcodes(affine: np.ndarray) -> tuple[str, str, str]:
    """Closest anatomical axis codes of an affine, e.g. ``("L", "A", "S")`` (nibabel)."""
    return tuple(nib.aff2axcodes(affine))  # type: ignore[return-value]


def to_canonical(image: Image, copy: bool = True) -> tuple[Image, Reorientation]:
    """Permute and flip a 3D image's axes to RAS; no interpolation.

    Args:
        image: a 3D :class:`Image`; any orientation, oblique allowed.

    Returns:
        ``(canonical_image, reorientation)``; ``canonical_image.affine`` maps the new voxel
        indices to the same world points, so every voxel keeps its world position.
        Pass ``reorientation`` to :func:`from_canonical` to go back.

    Raises:
        ValueError: the image is not 3D.

    With ``copy=False`` the canonical array is a view of the input's (permuted and flipped
    strides, no memory), for callers that only read it.
    """
    if image.ndim != 3:
        raise ValueError(f"to_canonical: expected a 3D image, got shape {image.shape}")
    ornt = nib.orientations.io_orientation(image.affine)
    transform = nib.orientations.ornt_transform(ornt, _RAS)
    array = nib.orientations.apply_orientation(image.array, transform)
    affine = image.affine @ nib.orientations.inv_ornt_aff(transform, image.shape)
    canonical = Image(np.ascontiguousarray(array) if copy else array, affine, image.source, None, image.modality)
    return canonical, Reorientation(ornt, tuple(image.shape), axcodes(image.affine))


def from_canonical(array: np.ndarray, reorientation: Reorientation) -> np.ndarray:
    """Map an array on the canonical RAS grid back to the original voxel axes.

    Args:
        array: shape ``(X, Y, Z)`` as produced on the canonical grid (any dtype); extra
            leading axes are not allowed.
        reorientation: from :func:`to_canonical`.

    Returns:
        A contiguous array of shape ``reorientation.original_shape``.

    Raises:
        ValueError: the result's shape differs from the original shape.
    """
    back = nib.orientations.ornt_transform(_RAS, reorientation.ornt)
    out = np.ascontiguousarray(nib.orientations.apply_orientation(array, back))
    if tuple(out.shape) != reorientation.original_shape:
        raise ValueError(
            f"from_canonical: expected shape {reorientation.original_shape}, got {out.shape}"
        )
    return out


PLANE_AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Canonical (RAS) array axis the slices of each plane are taken along."""

ISOTROPIC_RATIO = 1.5
"""A voxel whose largest side is under this multiple of its smallest has no acquisition plane."""

PLANES_COVERAGE_MM = 150.0
"""A scan covering at least this along its acquisition (slice) axis is not a slab: a whole kidney
(100-130 mm) and its neighbours fit in every plane, so a 2D model may average all three planes
(``"planes": "coverage"``, :func:`kidneyseg.inference.predict.planes_used`; benchmarks/README.md,
"Planes by coverage")."""


def acquisition_axes(spacing_mm: tuple[float, float, float]) -> list[int]:
    """Canonical axes a scan's slices run along: the thickest axis (the acquisition's slice
    direction), or all three when the voxel is near isotropic (:data:`ISOTROPIC_RATIO`); ties go
    to the axial axis (2), then coronal (1).

    Args:
        spacing_mm: canonical (RAS) voxel sides, mm.

    Returns:
        One axis, or ``[0, 1, 2]``.
    """
    sp = np.asarray(spacing_mm, dtype=float)
    if sp.max() < ISOTROPIC_RATIO * sp.min():
        return [0, 1, 2]
    return [int(max((2, 1, 0), key=lambda a: sp[a]))]


def extents_mm(canonical: Image) -> list[float]:
    """How far a scan reaches along each of its first three array axes, mm: ``shape * spacing_mm``."""
    return [float(n * s) for n, s in zip(canonical.shape[:3], canonical.spacing_mm)]


def acquisition_extent_mm(canonical: Image) -> float:
    """How far a RAS-canonical scan reaches along its acquisition (slice) axis, mm:
    :func:`extents_mm` along the first of :func:`acquisition_axes`."""
    return extents_mm(canonical)[acquisition_axes(canonical.spacing_mm)[0]]


def covers_planes(canonical: Image) -> bool:
    """True unless the scan is a slab: a near-isotropic voxel, or at least
    :data:`PLANES_COVERAGE_MM` along the acquisition axis (:func:`acquisition_extent_mm`). Where
    it holds, the shipped multiprotocol model averages all three planes and ``mr-auto`` gives it
    axial scans too."""
    return len(acquisition_axes(canonical.spacing_mm)) == 3 or acquisition_extent_mm(canonical) >= PLANES_COVERAGE_MM


def wide_planes(canonical: Image) -> list[int]:
    """Planes of a near-isotropic scan that hold a kidney and its neighbours (``"planes": "fov"``,
    :func:`kidneyseg.inference.predict.planes_used`): the canonical axes whose slices measure at
    least :data:`PLANES_COVERAGE_MM` on both in-plane sides; if none does, the one axis whose
    slices have the largest smaller side (ties: axial, then coronal). On a 60 mm axial slab of
    3 mm voxels this is the axial plane alone: its coronal and sagittal slices are 60 mm strips
    (benchmarks/README.md, "Near-isotropic slabs").

    Args:
        canonical: the RAS image (its ``shape`` and ``spacing_mm`` are read).

    Returns:
        Sorted canonical axes, at least one.
    """
    extent = extents_mm(canonical)
    smaller = {a: min(extent[u] for u in range(3) if u != a) for a in range(3)}
    wide = [a for a in range(3) if smaller[a] >= PLANES_COVERAGE_MM]
    return wide or [max((2, 1, 0), key=lambda a: smaller[a])]


def acquisition_plane_name(spacing_mm: tuple[float, float, float]) -> str:
    """``"axial"``, ``"coronal"``, ``"sagittal"`` (:func:`acquisition_axes`) or
    ``"near-isotropic"`` for a scan with canonical (RAS) voxel sides ``spacing_mm``."""
    axes = acquisition_axes(spacing_mm)
    return "near-isotropic" if len(axes) > 1 else next(n for n, a in PLANE_AXES.items() if a == axes[0])
