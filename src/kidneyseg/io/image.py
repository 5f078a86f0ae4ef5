"""The :class:`Image` value shared by every step of a pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Image:
    """A voxel array with its exact geometry.

    Attributes:
        array: voxel values, shape ``(X, Y, Z)`` for volumes (``(H, W)`` for 2D images),
            in the axis order of the file it came from unless a function says otherwise.
        affine: ``(4, 4)`` float64 matrix mapping voxel indices ``(i, j, k, 1)`` to world
            coordinates in mm, RAS+ as NIfTI and nibabel define it: world x grows towards
            the patient's Right, y towards Anterior, z towards Superior.
        source: the path the image was read from (``None`` for computed images).
        nifti_header: the source's NIfTI header (``None`` for DICOM and PAR/REC input);
            masks written for this image copy its qform and sform (matrices and codes).
        modality: free text such as ``"MR"`` or ``"CT"``; ``""`` when unknown.
    """

    array: np.ndarray
    affine: np.ndarray
    source: Path | None = None
    nifti_header: Any = field(default=None, repr=False)
    modality: str = ""

    def __post_init__(self) -> None:
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine: expected shape (4, 4), got {aff.shape}")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape."""
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """Number of array dimensions."""
        return self.array.ndim

    @property
    def spacing_mm(self) -> tuple[float, ...]:
        """Voxel spacing in mm, in array-axis order (column norms of the affine)."""
        n = min(self.array.ndim, 3)
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :n], axis=0))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (1 mL = 1000 mm^3); |det| of the affine's 3x3 part."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def name(self) -> str:
        """Case name: the source file name without ``.nii.gz``/``.nii``/other extension."""
        if self.source is None:
            return "image"
        return case_name(self.source)

    def with_array(self, array: np.ndarray) -> "Image":
        """Same geometry, new voxels. ``array.shape`` must equal ``self.shape``.

        Raises:
            ValueError: the shapes differ.
        """
        if tuple(array.shape) != self.shape:
            raise ValueError(f"with_array: expected shape {self.shape}, got {tuple(array.shape)}")
        return Image(array, self.affine, self.source, self.nifti_header, self.modality)


_EXTENSIONS = (".nii.gz", ".nii", ".par", ".rec", ".dcm", ".png", ".jpg", ".jpeg", ".zip")


def case_name(path: str | Path) -> str:
    """File or folder name without its image extension (``case_7.nii.gz`` -> ``case_7``); a
    path without a name of its own (``.``, ``..``, ``dicom/``) is named after the folder it
    resolves to."""
    name = Path(path).name
    if name in ("", ".", ".."):
        name = Path(path).resolve().name or "root"
    low = name.lower()
    for ext in _EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name
