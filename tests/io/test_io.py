"""I/O round trips, reorientation on real files of three orientations, DICOM and PAR/REC."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.errors import InputError
from kidneyseg.io import (Image, axcodes, check_volume, from_canonical, mask_to_nifti, read_image,
                          to_canonical, write_mask)

from ..conftest import CHAOS, KITS19, UKAT, needs_chaos, save_nifti


def _oblique_affine(spacing, flips=(1, 1, 1), angle_deg=12.0, perm=(0, 1, 2)):
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    m = np.eye(3)[:, list(perm)] * np.array(flips) * np.array(spacing)
    aff = np.eye(4)
    aff[:3, :3] = rot @ m
    aff[:3, 3] = (12.5, -30.0, 7.25)
    return aff


@pytest.mark.parametrize("flips,perm,angle", [((1, 1, 1), (0, 1, 2), 0.0), ((-1, 1, -1), (0, 1, 2), 0.0),
                                             ((1, -1, 1), (2, 0, 1), 17.0), ((-1, -1, -1), (1, 2, 0), 33.0)])
def test_mask_round_trip_keeps_shape_affine_qform_sform(tmp_path, flips, perm, angle):
    shape = (23, 31, 7)  # unequal sides
    aff = _oblique_affine((0.8, 1.1, 3.3), flips, angle, perm)
    src = save_nifti(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), aff, tmp_path / "in.nii.gz")
    img = read_image(src)
    mask = (np.asarray(img.array) % 3).astype(np.uint8)
    write_mask(mask, img, tmp_path / "out.nii.gz")
    a, b = nib.load(src), nib.load(tmp_path / "out.nii.gz")
    assert b.shape == a.shape
    assert np.array_equal(b.affine, a.affine)
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "pixdim"):
        assert np.array_equal(a.header[key], b.header[key]), key
    assert np.array_equal(np.asarray(b.dataobj), mask)


def test_canonical_round_trip_preserves_world_positions():
    rng = np.random.default_rng(1)
    for flips, perm in [((1, 1, 1), (0, 1, 2)), ((-1, 1, -1), (2, 1, 0)), ((1, -1, -1), (1, 2, 0))]:
        aff = _oblique_affine((0.7, 1.3, 4.0), flips, 9.0, perm)
        arr = rng.normal(size=(11, 13, 5)).astype(np.float32)
        img = Image(arr, aff)
        can, reo = to_canonical(img)
        assert axcodes(can.affine) == ("R", "A", "S")
        # every voxel keeps its world position: compare a value located by world coordinates
        for idx in [(0, 0, 0), (10, 12, 4), (3, 7, 2)]:
            world = aff @ np.array([*idx, 1.0])
            cidx = np.linalg.solve(can.affine, world)[:3].round().astype(int)
            assert can.array[tuple(cidx)] == arr[idx]
        assert np.array_equal(from_canonical(can.array, reo), arr)


@needs_chaos
@pytest.mark.parametrize("path", [
    CHAOS / "label_39.nii.gz",
    UKAT / "ge_01" / "00720__Magnitude_ims__B0_map_dual_echo_e1.nii.gz",
    KITS19 / "case_00000" / "segmentation.nii.gz",
], ids=["chaos_LAS", "ukat_coronal", "kits19_IPL"])
def test_real_files_three_orientations(path):
    if not path.exists():
        pytest.skip(f"{path} not present")
    img = read_image(path)
    expected = {"chaos_t2": ("L", "A", "S"), "ukat_kidney_masks": ("L", "S", "P"), "kits19": ("I", "P", "L")}
    key = next(k for k in expected if k in str(path))
    assert axcodes(img.affine) == expected[key]
    can, reo = to_canonical(img)
    assert axcodes(can.affine) == ("R", "A", "S")
    # the canonical superior axis is the last one, whichever the file's
    assert np.allclose(np.abs(can.affine[:3, :3]).argmax(axis=0), [0, 1, 2])
    assert np.array_equal(from_canonical(can.array, reo), np.asarray(img.array))
    # foreground centroid in world coordinates is unchanged by reorientation
    fg0 = np.argwhere(np.asarray(img.array) > np.median(img.array)).mean(0)
    fg1 = np.argwhere(can.array > np.median(can.array)).mean(0)
    w0 = img.affine @ np.r_[fg0, 1.0]
    w1 = can.affine @ np.r_[fg1, 1.0]
    assert np.allclose(w0, w1, atol=1e-6)


@needs_chaos
def test_dicom_series_matches_nifti(tmp_path):
    import SimpleITK as sitk

    src = CHAOS / "image_39.nii.gz"
    nii = read_image(src, dtype=np.float32)
    itk = sitk.ReadImage(str(src), sitk.sitkInt16)  # ITK converts the NIfTI RAS affine to LPS
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.39"
    for k in range(itk.GetDepth()):
        sl = itk[:, :, k]
        for tag, value in {"0008|0060": "MR", "0020|000e": series_uid, "0020|000d": series_uid + ".0",
                           "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(f"{v:.6f}" for v in itk.TransformIndexToPhysicalPoint((0, 0, k))),
                           "0020|0037": "\\".join(f"{v:.6f}" for v in np.array(itk.GetDirection()).reshape(3, 3)[:, :2].T.ravel())}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice_{k:03d}.dcm"))
        writer.Execute(sl)
    dcm = read_image(tmp_path)
    assert dcm.modality == "MR"
    # A DICOM series is always stored right-handed (slice normal = row x column), while
    # this NIfTI is LAS (left-handed): GDCM orders the slices the other way. The voxels
    # must still sit at the same world positions, so compare on the canonical grid.
    dcm_c, _ = to_canonical(dcm)
    nii_c, _ = to_canonical(nii)
    assert dcm_c.shape == nii_c.shape
    assert np.allclose(dcm_c.affine, nii_c.affine, atol=1e-3)
    assert np.array_equal(np.asarray(dcm_c.array, dtype=np.float32), np.round(nii_c.array))


def test_parrec_reads_with_nibabel_affine():
    data = Path(nib.__file__).parent / "tests" / "data" / "phantom_EPI_asc_CLEAR_2_1.PAR"
    if not data.exists():
        pytest.skip("nibabel PAR/REC test data not installed")
    img = read_image(data)
    ref = nib.load(str(data))
    assert img.shape == ref.shape
    assert np.array_equal(img.affine, ref.affine)
    with pytest.raises(InputError, match="expected a 3D image, got 4D"):
        check_volume(img)


def test_mask_to_nifti_rejects_shape_mismatch():
    img = Image(np.zeros((4, 5, 6), np.float32), np.eye(4))
    from kidneyseg.errors import GeometryError

    with pytest.raises(GeometryError):
        mask_to_nifti(np.zeros((4, 5, 7), np.uint8), img)


@pytest.mark.parametrize("content,problem", [
    (b"", "empty"), (b"this is not a nifti file\n" * 20, "not a readable NIfTI"),
])
def test_unreadable_files_raise_input_error(tmp_path, content, problem):
    p = tmp_path / "bad.nii.gz"
    p.write_bytes(content)
    with pytest.raises(InputError, match=problem) as e:
        read_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_gzip_raises_input_error(tmp_path):
    good = save_nifti(np.random.default_rng(0).normal(size=(40, 40, 20)).astype(np.float32), np.eye(4),
                      tmp_path / "good.nii.gz")
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated|not a readable"):
        read_image(bad, dtype=np.float32)


@pytest.mark.parametrize("array,problem", [
    (np.zeros((8, 8, 8), np.float32), "constant"),
    (np.where(np.arange(512).reshape(8, 8, 8) == 5, np.nan, 1.0).astype(np.float32), "NaN or Inf"),
    (np.ones((8, 8), np.float32), "expected a 3D"),
    (np.ones((8, 8, 8, 2), np.float32), "expected a 3D"),
])
def test_check_volume_rejects(array, problem):
    with pytest.raises(InputError, match=problem):
        check_volume(Image(array, np.eye(4)))


def test_check_volume_squeezes_singleton_4d():
    arr = np.random.default_rng(0).normal(size=(6, 7, 8, 1)).astype(np.float32)
    assert check_volume(Image(arr, np.eye(4))).shape == (6, 7, 8)


def test_zip_member_larger_than_any_dicom_is_refused_before_extraction(tmp_path, monkeypatch):
    """A DICOM .zip whose member unpacks beyond the cap is refused without reading it whole
    (issue 24: a 23 MB zip holding a 5 GiB member exhausted memory); the cap is lowered here
    so the test needs no gigabytes."""
    import zipfile

    import kidneyseg.io.readers as readers
    from kidneyseg.errors import InputError

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("series/IM0001.dcm", b"\0" * 5_000_000)  # 5 MB of zeros: about 5 kB packed
    monkeypatch.setattr(readers, "ZIP_MEMBER_MAX_BYTES", 1_000_000)
    with pytest.raises(InputError, match=r"bomb.zip: member 'series/IM0001.dcm' unpacks to 5000000 bytes"):
        with readers.dicom_folder(archive):
            pass
    monkeypatch.setattr(readers, "ZIP_MEMBER_MAX_BYTES", 10_000_000)
    with readers.dicom_folder(archive) as folder:  # under the cap: streamed out whole
        assert [p.stat().st_size for p in folder.iterdir()] == [5_000_000]
