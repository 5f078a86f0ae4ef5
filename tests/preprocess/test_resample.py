import numpy as np
import torch

from kidneyseg.preprocess import resize_slice_axis, resize_slices


def test_resize_slice_axis_is_linear_along_the_last_axis_only():
    # a ramp along z (value = z position in mm) sampled at 1.25 mm, resampled to 2 mm spacing over
    # the same extent (align_corners=False: voxel centres at (i + 0.5) * spacing)
    z = (np.arange(16) + 0.5) * 1.25
    vol = np.broadcast_to(z, (3, 4, 16)).astype(np.float32)
    out = resize_slice_axis(vol, 10)
    assert out.shape == (3, 4, 10) and out.dtype == torch.float32
    inner = (np.arange(10) + 0.5) * 2.0
    ok = (inner >= z[0]) & (inner <= z[-1])  # linear interpolation is exact for a ramp inside the grid
    assert np.allclose(out[0, 0].numpy()[ok], inner[ok], atol=1e-5)
    assert np.allclose(out.numpy(), out[0, 0].numpy())  # nothing moves across x or y
    # channels first, back to the original count: a smooth field comes back close
    probs = torch.from_numpy(np.stack([vol, 2 * vol]))
    back = resize_slice_axis(resize_slice_axis(probs, 10), 16)
    assert back.shape == (2, 3, 4, 16) and float((back - probs).abs()[..., 2:-2].max()) < 1e-4
    assert resize_slice_axis(vol, 16) is not None and np.array_equal(resize_slice_axis(vol, 16).numpy(), vol)


def test_resize_slices_leaves_the_slice_axis_alone():
    vol = np.random.default_rng(0).random((8, 6, 5)).astype(np.float32)
    out = resize_slices(vol, (4, 3))
    assert out.shape == (4, 3, 5)
    assert np.allclose(out[..., 2].numpy().mean(), vol[..., 2].mean(), atol=0.1)
