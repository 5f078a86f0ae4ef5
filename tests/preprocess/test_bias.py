"""N4 bias-field correction on a real MR volume with a known synthetic bias."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.api import example_dir
from kidneyseg.io import read_image
from kidneyseg.preprocess import n4_bias_correct


def test_n4_keeps_the_grid_and_factorises_the_input():
    img = read_image(example_dir() / "image_39.nii.gz", dtype=np.float32)
    corrected, bias = n4_bias_correct(img)
    assert corrected.shape == img.shape and np.array_equal(corrected.affine, img.affine)
    assert corrected.array.dtype == np.float32 and bias.shape == img.shape and bias.min() > 0
    np.testing.assert_allclose(corrected.array * bias, img.array, rtol=1e-4, atol=1e-2)


def test_n4_rejects_a_mask_of_another_shape():
    img = read_image(example_dir() / "image_39.nii.gz", dtype=np.float32)
    with pytest.raises(ValueError, match="mask"):
        n4_bias_correct(img, mask=np.ones((2, 2, 2), bool))
