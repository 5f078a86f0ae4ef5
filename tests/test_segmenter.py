"""kidneyseg.Segmenter: one model load, many images, the inputs Python users hold (issue 25)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import kidneyseg
from kidneyseg.api import example_dir
from kidneyseg.errors import InputError
from kidneyseg.models.store import default_model_dir

needs_model = pytest.mark.skipif(not (default_model_dir() / "model.pt").exists(), reason="shipped model not built")
EXAMPLE = example_dir() / "image_39.nii.gz"


@needs_model
def test_one_load_many_input_types_same_mask(monkeypatch):
    import SimpleITK as sitk

    import kidneyseg.api as api

    loads = []
    real = api.get_pipeline
    monkeypatch.setattr(api, "get_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    seg = kidneyseg.Segmenter(device="cpu", tta=False)
    nii = nib.load(str(EXAMPLE))
    from_path = seg(EXAMPLE)
    from_nib = seg(nii)
    from_pair = seg((np.asarray(nii.dataobj, np.float32), nii.affine))
    from_sitk = seg(sitk.ReadImage(str(EXAMPLE)))
    assert len(loads) == 1  # the model was loaded once for four images
    for other in (from_nib, from_pair, from_sitk):
        np.testing.assert_array_equal(other.mask.array, from_path.mask.array)
        np.testing.assert_allclose(other.mask.affine, from_path.mask.affine, atol=1e-4)
        assert other.volumes_ml == pytest.approx(from_path.volumes_ml, rel=1e-4)


def test_unsupported_input_is_refused_before_any_model_load(monkeypatch):
    import kidneyseg.api as api

    monkeypatch.setattr(api, "get_pipeline", lambda *a, **k: pytest.fail("model loaded before the input was checked"))
    with pytest.raises(InputError, match="got list"):
        kidneyseg.segment([1, 2, 3])
    with pytest.raises(InputError, match="finite"):
        kidneyseg.segment((np.zeros((4, 4, 4)), np.full((4, 4), np.nan)))
    with pytest.raises(InputError, match="--no-tta: pipeline c2f-cascade"):
        kidneyseg.Segmenter("c2f-cascade", tta=False)
