"""In-plane resampling of stacks of slices (torch.nn.functional.interpolate)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
