"""Crop a box, resize it to the network's fixed input size, and map predictions back.

Seed 000 (section II.D): the cropped kidney area has an arbitrary in-plane size, so every
crop is resized to 64 x 64 x 16 (64 x 64 x 64 after super-resolution). Resizing is
trilinear (``torch.nn.functional.interpolate``, ``align_corners=False``: voxel areas, not
centres, are matched); the way back resizes the probabilities to the box's exact shape
and pastes them into a zero volume of the input's shape, so the output grid is the input's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..localize.em import Box


def crop_resize(volume: np.ndarray, box: Box, size: tuple[int, int, int]) -> np.ndarray:
    """``volume[box]`` resized to ``size`` (trilinear).

    Args:
        volume: 3D float array.
        box: :class:`~kidneyseg.localize.em.Box` inside ``volume``.
        size: output shape, same axis order as ``volume``.

    Returns:
        float32 array of shape ``size``.
    """
    crop = torch.from_numpy(np.ascontiguousarray(volume[box.slices], dtype=np.float32))[None, None]
    return F.interpolate(crop, size=tuple(size), mode="trilinear", align_corners=False)[0, 0].numpy()


def uncrop(values: np.ndarray | torch.Tensor, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """Resize ``values`` (e.g. kidney probabilities at the network size) to the box's shape
    (trilinear) and paste them into a zero array of ``shape``.

    Returns:
        float32 array of ``shape``; zero outside the box.
    """
    t = torch.as_tensor(values, dtype=torch.float32)[None, None]
    back = F.interpolate(t, size=box.shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    out = np.zeros(shape, dtype=np.float32)
    out[box.slices] = back
    return out


def full_box(shape: tuple[int, int, int], slice_axis: int) -> Box:
    """The box covering the whole volume (the un-localised network)."""
    return Box((0, 0, 0), tuple(int(s) for s in shape), slice_axis)


__all__ = ["crop_resize", "full_box", "uncrop"]
