"""Case.kidneyseg_labels: a dataset's file label values mapped onto kidneyseg's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kidneyseg.datasets import chaos_cases
from kidneyseg.datasets.layouts import Case
from kidneyseg.labels import MR_KIDNEYS

from ..conftest import SHARED_DATA


def test_file_values_map_to_kidneyseg_values_and_the_rest_to_background():
    case = Case("1", Path("img.nii.gz"), Path("lbl.nii.gz"), {2: 1, 3: 2})  # CHAOS: 2 right, 3 left
    mask = np.array([[[0, 1, 2], [3, 4, 9]]], np.int16)  # 1 liver, 4 spleen, 9 not in any map
    out = case.kidneyseg_labels(mask)
    assert out.dtype == np.uint8 and out.shape == mask.shape
    np.testing.assert_array_equal(out, [[[0, 0, 1], [2, 0, 0]]])
    assert case.kidneyseg_labels(np.zeros((2, 2), np.uint8)).sum() == 0  # a mask without the mapped values


def test_chaos_case_on_disk_gives_both_kidneys():
    case = next(c for c in chaos_cases(SHARED_DATA / "chaos_t2", MR_KIDNEYS) if c.case_id == "39")
    import nibabel as nib

    raw = np.asarray(nib.load(case.label).dataobj)
    out = case.kidneyseg_labels(raw)
    assert set(np.unique(out)) == {0, 1, 2}
    assert ((raw == 2) == (out == 1)).all() and ((raw == 3) == (out == 2)).all()  # CHAOS MR: 2 right, 3 left
