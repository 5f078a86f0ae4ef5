"""Images from the objects Python users already hold: a path, a kidneyseg :class:`Image`, a
nibabel image, a SimpleITK image, or an ``(array, affine)`` pair."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .image import Image
from .readers import read_image, sitk_to_image


def as_image(obj, dtype: type | None = np.float32) -> Image:
    """An :class:`Image` from ``obj``.

    Args:
        obj: a path (``str`` / ``Path``: :func:`kidneyseg.io.read_image`), an :class:`Image`
            (returned as is), a nibabel spatial image (its array and ``affine``; the NIfTI header
            kept), a SimpleITK image, or a pair ``(array, affine)`` with a ``(4, 4)`` RAS+ affine
            in mm (as nibabel's).
        dtype: array type for the non-``Image`` inputs (``None``: as stored).

    Raises:
        InputError: any other type, or a pair whose affine is not ``(4, 4)`` and finite.
    """
    if isinstance(obj, Image):
        return obj
    if isinstance(obj, (str, Path)):
        return read_image(obj, dtype=dtype)
    if isinstance(obj, tuple) and len(obj) == 2:
        array, affine = np.asarray(obj[0]), np.asarray(obj[1], dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InputError(f"(array, affine): expected a finite (4, 4) affine, got shape {affine.shape}")
        return Image(array.astype(dtype, copy=False) if dtype is not None else array, affine)
    if isinstance(obj, nib.spatialimages.SpatialImage):
        array = obj.get_fdata(dtype=dtype) if dtype is not None and np.issubdtype(dtype, np.floating) \
            else np.asanyarray(obj.dataobj)
        header = obj.header.copy() if isinstance(obj, (nib.Nifti1Image, nib.Nifti2Image)) else None
        return Image(array, obj.affine, None, header, "")
    if type(obj).__module__.startswith("SimpleITK"):
        return sitk_to_image(obj, dtype)
    raise InputError(f"image: expected a path, kidneyseg Image, nibabel image, SimpleITK image or (array, affine); "
                     f"got {type(obj).__name__}")


__all__ = ["as_image", "sitk_to_image"]
