"""kidneyseg.arrays.largest_components: the one 'keep the k largest components' every pipeline uses."""

from __future__ import annotations

import numpy as np

from kidneyseg.arrays import largest_components


def _blobs() -> np.ndarray:
    m = np.zeros((20, 20, 20), bool)
    m[1:6, 1:6, 1:6] = True       # 125 voxels
    m[10:13, 10:13, 10:13] = True  # 27
    m[15:19, 1:5, 15:19] = True   # 64
    m[6, 6, 6] = True             # touches the first block at a corner only
    return m


def test_keeps_the_largest_components_by_size():
    m = _blobs()
    one = largest_components(m)
    assert one.sum() == 125 and one[1, 1, 1] and not one[15, 1, 15]
    two = largest_components(m, keep=2)
    assert two.sum() == 125 + 64 and not two[10, 10, 10]
    assert largest_components(m, keep=9).sum() == m.sum()  # fewer components than keep: unchanged
    assert largest_components(m, keep=0).sum() == m.sum()


def test_connectivity_decides_whether_a_corner_joins():
    m = _blobs()
    assert not largest_components(m, connectivity=1)[6, 6, 6]  # faces only: a separate voxel
    assert largest_components(m, connectivity=3)[6, 6, 6]      # 26-connectivity: part of the block


def test_equal_sizes_keep_the_first_label_and_2d_works():
    m = np.zeros((8, 8), bool)
    m[0:2, 0:2] = True
    m[5:7, 5:7] = True
    out = largest_components(m)
    assert out.sum() == 4 and out[0, 0] and not out[5, 5]
