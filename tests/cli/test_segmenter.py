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


def test_device_spellings_of_other_tools():
    """--device takes TotalSegmentator's and torch's spellings (gpu, gpu:N, cuda:N, mps); a device
    the machine lacks is one clear error, not a torch traceback."""
    import torch

    from kidneyseg.models.store import resolve_device

    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(InputError, match="expected auto, cpu, cuda, cuda:N, gpu, gpu:N or mps"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for spelling in ("gpu", "gpu:0", "cuda:1"):
            with pytest.raises(InputError, match=f"--device {spelling}: CUDA is not available"):
                resolve_device(spelling)
    else:
        assert resolve_device("gpu:0") == torch.device("cuda", 0)
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(InputError, match="MPS is not available"):
            resolve_device("mps")
