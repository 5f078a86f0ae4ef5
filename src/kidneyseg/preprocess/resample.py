"""Resampling of volumes and stacks of slices (torch.nn.functional.interpolate)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def resize_slice_axis(volume: np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    """Resample a volume along its last (slice) axis to ``n`` slices, linearly; the other axes
    are untouched.

    Args:
        volume: ``(X, Y, Z)`` array, or ``(C, X, Y, Z)`` for several channels.
        n: slices wanted.

    Returns:
        float32 tensor ``(X, Y, n)`` or ``(C, X, Y, n)``; unchanged values when ``n == Z``.

    Source: ``torch.nn.functional.interpolate`` (``mode="linear"``, ``align_corners=False``:
    the first and last slice centres of both grids span the same extent, as
    :func:`resize_slices` does in plane).
    """
    t = torch.as_tensor(volume, dtype=torch.float32)
    if t.shape[-1] == n:
        return t
    lead = t.shape[:-2]
    flat = t.reshape(-1, t.shape[-2], t.shape[-1])  # (C*X, Y, Z): Y as channels, Z as length
    out = F.interpolate(flat, size=int(n), mode="linear", align_corners=False)
    return out.reshape(*lead, t.shape[-2], int(n)).contiguous()


def resize_slices(volume: np.ndarray | torch.Tensor, size_xy: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize every axial slice of a volume to ``size_xy``; the slice axis is untouched.

    Args:
        volume: ``(X, Y, Z)`` array, or ``(C, X, Y, Z)`` for several channels.
        size_xy: target ``(X, Y)`` in voxels.
        mode: ``"bilinear"`` for images and probabilities, ``"nearest-exact"`` for labels.

    Returns:
        float32 tensor ``(X', Y', Z)`` or ``(C, X', Y', Z)``. When the size is unchanged the
        values are returned unchanged (no interpolation).

    Source: ``torch.nn.functional.interpolate`` with ``align_corners=False`` (voxel centres
    of the two grids are aligned as in ITK's resampling with the same field of view).
    """
    t = torch.as_tensor(volume, dtype=torch.float32)
    squeeze = t.ndim == 3
    if squeeze:
        t = t[None]
    if tuple(t.shape[1:3]) == tuple(size_xy):
        return t[0] if squeeze else t
    # (C, X, Y, Z) -> (Z, C, X, Y): slices become the batch
    s = t.permute(3, 0, 1, 2)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    s = F.interpolate(s, size=tuple(size_xy), mode=mode, **kwargs)
    out = s.permute(1, 2, 3, 0).contiguous()
    return out[0] if squeeze else out


def resample_isotropic(array: np.ndarray, spacing_mm: tuple[float, float, float], target_mm: float,
                       mode: str = "trilinear") -> np.ndarray:
    """Resample a ``(X, Y, Z)`` volume (or ``(C, X, Y, Z)``) to ``target_mm`` on every axis.

    ``size = round(n * spacing / target)`` per axis; voxel centres aligned as ITK does for the
    same field of view (``torch.nn.functional.interpolate``, ``align_corners=False``).
    ``mode`` is ``"trilinear"`` (float32 result) or ``"nearest-exact"``.
    """
    t = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
    squeeze = t.ndim == 3
    t = t[None, None] if squeeze else t[None]
    size = tuple(max(1, round(n * s / target_mm)) for n, s in zip(array.shape[-3:], spacing_mm))
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(t, size=size, mode=mode, **kwargs)[0]
    return (out[0] if squeeze else out).numpy()


def resample_volume(array: np.ndarray, spacing_mm, target_mm, order: int) -> np.ndarray:
    """Resample an RAS-ordered array to ``target_mm`` keeping the field of view.

    ``scipy.ndimage.zoom`` with ``grid_mode=True`` (voxel edges of the two grids coincide,
    as ITK/SimpleITK do for a same-extent resampling); ``order`` 3 (cubic spline) for images,
    0 (nearest) for labels. Output shape: ``round(shape * spacing / target)``, at least 1.
    """
    shape = np.asarray(array.shape, float)
    new = np.maximum(np.round(shape * np.asarray(spacing_mm, float) / np.asarray(target_mm, float)), 1)
    zoom = new / shape
    if np.allclose(zoom, 1):
        return np.asarray(array)
    return ndimage.zoom(array, zoom, order=order, mode="nearest" if order else "grid-constant",
                        grid_mode=True, prefilter=order > 1)
