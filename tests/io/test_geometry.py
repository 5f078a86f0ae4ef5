"""Geometry properties of the segmentation pipeline on a real case: the mask keeps the
input's grid for random affines, left and right are right in all 48 axis orientations,
and results are deterministic across runs and thread counts."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kidneyseg.io import Image, mask_to_nifti, read_image
from kidneyseg.metrics import dice
from kidneyseg.pipelines import get_pipeline

from ..corpus import load_base

KIDNEY_CROP = (slice(12, 172), slice(20, 140), slice(4, 28))  # both kidneys of case 39, 160 x 120 x 24


@pytest.fixture(scope="module")
def real_case(tmp_path_factory):
    base = load_base(tmp_path_factory.mktemp("geometry"))
    affine = base.affine.copy()
    start = np.array([s.start for s in KIDNEY_CROP])
    affine[:3, 3] = base.affine[:3, :3] @ start + base.affine[:3, 3]
    return (np.ascontiguousarray(base.image[KIDNEY_CROP]), np.ascontiguousarray(base.mask[KIDNEY_CROP]), affine)


@pytest.fixture(scope="module")
def pipeline():
    """The shipped model with one network pass. Storage order is undone before the network
    (to_canonical) and redone after it (from_canonical); the test-time augmentation's shifts act
    on the canonical grid, the same for all 48 orders, so they add nothing to what these tests
    check, and cost four passes per segmentation (``test_segment_output_bytes_identical_in_two_processes``
    and the CLI tests run the default, with TTA)."""
    pipe = get_pipeline("mr-t2-unet", device="cpu")
    pipe.disable_tta()
    return pipe


def _reorient(array: np.ndarray, affine: np.ndarray, perm, flips):
    """The same voxels stored with permuted and flipped axes; world positions unchanged."""
    out = np.transpose(array, perm)
    new_aff = affine[:, list(perm) + [3]].copy()
    for ax, flip in enumerate(flips):
        if flip:
            out = np.flip(out, ax)
            n = out.shape[ax]
            new_aff[:3, 3] += new_aff[:3, ax] * (n - 1)
            new_aff[:3, ax] *= -1
    return np.ascontiguousarray(out), new_aff


ORIENTATIONS = [(p, f) for p in itertools.permutations(range(3)) for f in itertools.product((False, True), repeat=3)]


def test_left_right_in_all_48_orientations(real_case, pipeline):
    image, ref, affine = real_case
    assert len(ORIENTATIONS) == 48
    baseline = pipeline.segment(Image(image, affine)).mask.array
    assert dice(baseline == 1, ref == 1) > 0.85 and dice(baseline == 2, ref == 2) > 0.8
    codes = set()
    for perm, flips in ORIENTATIONS:
        arr, aff = _reorient(image, affine, perm, flips)
        ref_o, _ = _reorient(ref, affine, perm, flips)
        codes.add("".join(nib.aff2axcodes(aff)))
        mask = pipeline.segment(Image(arr, aff)).mask
        assert mask.shape == arr.shape and np.array_equal(mask.affine, aff)
        # the same world voxels get the same labels, whatever the storage order
        expected, _ = _reorient(baseline, affine, perm, flips)
        assert np.array_equal(mask.array, expected), f"orientation {''.join(nib.aff2axcodes(aff))} differs"
        assert dice(mask.array == 1, ref_o == 1) > 0.85  # label 1 is the patient's right kidney
    assert len(codes) == 48


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(perm=st.permutations([0, 1, 2]), flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       spacing=st.tuples(st.floats(0.6, 3.0), st.floats(0.6, 3.0), st.floats(1.0, 9.0)),
       angles=st.tuples(st.floats(-0.5, 0.5), st.floats(-0.3, 0.3)),
       origin=st.tuples(*[st.floats(-500, 500)] * 3))
def test_mask_keeps_grid_for_random_affines(real_case, pipeline, tmp_path, perm, flips, spacing, angles, origin):
    image, _, _ = real_case
    a, b = angles
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    arr, aff = _reorient(image, affine, perm, flips)
    img = Image(arr, aff)
    result = pipeline.segment(img)
    assert result.mask.shape == arr.shape
    assert np.array_equal(result.mask.affine, aff)
    path = tmp_path / "mask.nii.gz"
    mask_to_nifti(result.mask.array, img).to_filename(str(path))
    back = read_image(path)
    assert np.array_equal(back.array, result.mask.array)
    assert np.allclose(back.affine, aff, atol=1e-4)  # NIfTI stores the affine as float32
    assert sum(result.volumes_ml[k] for k in ("kidney_right_ml", "kidney_left_ml")) == pytest.approx(
        np.count_nonzero(result.mask.array) * abs(np.linalg.det(aff[:3, :3])) / 1000.0)


def test_deterministic_across_runs_and_threads(real_case, pipeline):
    image, _, affine = real_case
    masks = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            masks.append(pipeline.segment(Image(image, affine)).mask.array.tobytes())
    finally:
        torch.set_num_threads(before)
    assert len(set(masks)) == 1


def test_segment_output_bytes_identical_in_two_processes(tmp_path):
    """Two separate `kidneyseg segment` runs write byte-identical masks."""
    import subprocess
    import sys

    from kidneyseg.api import example_dir

    digests = []
    for i, threads in enumerate((1, 2)):
        out = tmp_path / f"run{i}"
        subprocess.run([sys.executable, "-m", "kidneyseg.cli", "segment", str(example_dir() / "image_39.nii.gz"),
                        "-o", str(out), "--no-overlay", "--quiet", "--threads", str(threads)], check=True)
        digests.append(Path(out / "image_39_seg.nii.gz").read_bytes())
    assert digests[0] == digests[1]
