"""Series with several images at each slice position (echoes, magnitude and phase, inversion
times) and 4D NIfTI files: one volume is read, the one asked for, and the outputs reference it.

Real anatomy: a ukat gradient-echo scan (Siemens, 128 x 128 x 11, its first echo, as
dcm2niix's ``_e1``) written as a DICOM series; the second echo is that image scaled by 0.6
(T2* decay), so the two sets are told apart by their voxels as well as by EchoTime.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from kidneyseg.errors import InputError
from kidneyseg.io import check_volume, read_image
from kidneyseg.io.dicom_seg import read_dicom_seg, source_files
from kidneyseg.io.image_sets import image_sets

from ..conftest import cli, write_dicom_series

UKAT = Path(__file__).resolve().parents[3] / "shared" / "data" / "ukat_kidney_masks" / "siemens_04"
SERIES = "1.2.826.0.1.3680043.2.1125.1.4040"
pytestmark = pytest.mark.skipif(not UKAT.is_dir(), reason="../shared/data/ukat_kidney_masks not present")


def _echoes(tmp: Path) -> tuple[Path, Path]:
    src = next(p for p in UKAT.glob("*_e1.nii.gz"))
    img = nib.load(src)
    e1 = np.rint(img.get_fdata()).astype(np.int16)
    e1_path, e2_path = tmp / "e1.nii.gz", tmp / "e2.nii.gz"
    nib.Nifti1Image(e1, img.affine).to_filename(e1_path)
    nib.Nifti1Image(np.rint(0.6 * e1).astype(np.int16), img.affine).to_filename(e2_path)
    return e1_path, e2_path


def _total(array) -> int:
    return int(np.asarray(array, dtype=np.int64).sum())


def _write(folder: Path, volumes: list[tuple[Path, dict]]) -> Path:
    """Several volumes into one series folder; later volumes get file names that sort first,
    so the order of the files says nothing about the order of the sets."""
    first = 1
    for i, (path, tags) in enumerate(volumes):
        write_dicom_series(path, folder, series_uid=SERIES, extra_tags=tags, prefix=f"{chr(ord('z') - i)}",
                           first_instance=first)
        first += 1000
    return folder


@pytest.fixture(scope="module")
def echoes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("echoes")
    e1, e2 = _echoes(tmp)
    folder = _write(tmp / "b0map", [(e1, {"0018|0081": "4.0", "0018|0086": "1"}),
                                    (e2, {"0018|0081": "6.46", "0018|0086": "2"})])
    single = write_dicom_series(e1, tmp / "single", series_uid=SERIES + ".1")
    return folder, single, e1, e2


def test_multi_echo_series_reads_the_first_echo_by_default(echoes):
    folder, single, e1, e2 = echoes
    sets = image_sets([str(p) for p in sorted(folder.iterdir())], folder)
    assert [s.attributes for s in sets] == [{"EchoTime": "4.0"}, {"EchoTime": "6.46"}]
    assert all(len(s.files) == 11 for s in sets)
    default, alone = read_image(folder), read_image(single)
    assert np.array_equal(default.array, alone.array)  # echo 1, voxel for voxel, as its own series
    assert np.allclose(default.affine, alone.affine)
    second = read_image(folder, volume=2)
    assert np.array_equal(second.array, np.rint(0.6 * alone.array).astype(second.array.dtype))
    with pytest.raises(InputError, match=r"b0map: --volume 3: the series holds 2 image set"):
        read_image(folder, volume=3)


def test_magnitude_comes_before_phase(tmp_path):
    e1, e2 = _echoes(tmp_path)
    folder = _write(tmp_path / "magphase", [(e2, {"0008|0008": "ORIGINAL\\PRIMARY\\P\\ND"}),
                                            (e1, {"0008|0008": "ORIGINAL\\PRIMARY\\M\\ND"})])
    sets = image_sets([str(p) for p in sorted(folder.iterdir())], folder)
    assert [s.attributes["ImageType"].split("\\")[2] for s in sets] == ["M", "P"]
    assert _total(read_image(folder).array) == _total(nib.load(e1).dataobj)  # the same voxels, in DICOM's axis order


def test_inversion_times_need_a_choice(tmp_path):
    e1, e2 = _echoes(tmp_path)
    folder = _write(tmp_path / "molli", [(e1, {"0018|0082": "100"}), (e2, {"0018|0082": "1000"})])
    with pytest.raises(InputError, match=r"molli: the series holds 2 images at each slice position \(1: InversionTime "
                                         r"100; 2: InversionTime 1000\); choose one with --volume N"):
        read_image(folder)
    assert _total(read_image(folder, volume=2).array) == _total(nib.load(e2).dataobj)


def test_duplicates_and_incomplete_sets_are_refused(tmp_path):
    e1, e2 = _echoes(tmp_path)
    dup = _write(tmp_path / "dup", [(e1, {}), (e1, {})])
    with pytest.raises(InputError, match=r"dup: 22 images at 11 slice positions and no attribute tells"):
        read_image(dup)
    part = _write(tmp_path / "part", [(e1, {"0018|0081": "4.0"}), (e2, {"0018|0081": "6.46"})])
    next(part.glob("y_005.dcm")).unlink()  # one slice of the second echo lost in transfer
    with pytest.raises(InputError, match=r"part: the images with EchoTime 6.46 cover 10 of the series' 11 slice"):
        read_image(part)


def test_4d_nifti_needs_a_volume(tmp_path):
    e1, e2 = _echoes(tmp_path)
    a1, a2 = (np.asarray(nib.load(p).dataobj) for p in (e1, e2))
    path = tmp_path / "multi.nii.gz"
    nib.Nifti1Image(np.stack([a1, a2], axis=-1), nib.load(e1).affine).to_filename(path)
    with pytest.raises(InputError, match=r"multi.nii.gz: expected a 3D image, got 4D .*; choose one volume with --volume N"):
        check_volume(read_image(path))
    second = check_volume(read_image(path, volume=2))
    assert second.shape == a2.shape and np.array_equal(second.array, a2)
    assert tuple(second.nifti_header.get_data_shape()) == a2.shape
    with pytest.raises(InputError, match=r"multi.nii.gz: --volume 3: the file holds 2 volume"):
        read_image(path, volume=3)
    with pytest.raises(InputError, match=r"e1.nii.gz: --volume 2: the file holds 1 volume"):
        read_image(e1, volume=2)


def test_segment_multi_echo_series_to_dicom_seg(echoes, tmp_path):
    """The CLI on the two-echo series: echo 1 is segmented (the same mask as on echo 1 alone),
    the run says so, and the DICOM SEG references echo 1's images only."""
    folder, single, _, _ = echoes
    out, ref = tmp_path / "out", tmp_path / "ref"
    r = cli("segment", folder, "-o", out, "--pipeline", "mr-multiprotocol-unet", "--output-type", "both",
            "--fast", "--no-overlay", "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert "holds 2 images at each slice position; segmenting image set 1 of 2 (EchoTime 4.0)" in r.stderr
    r = cli("segment", single, "-o", ref, "--pipeline", "mr-multiprotocol-unet", "--fast", "--no-overlay",
            "--threads", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    mask = np.asarray(nib.load(out / "b0map_seg.nii.gz").dataobj)
    assert mask.any() and np.array_equal(mask, np.asarray(nib.load(ref / "single_seg.nii.gz").dataobj))
    run = json.loads((out / "b0map_run.json").read_text())
    assert run["input"]["volume"] == {"index": 1, "of": 2, "EchoTime": "4.0"}
    segments, _ = read_dicom_seg(out / "b0map_seg.dcm", folder, volume=1)
    assert np.array_equal(segments, mask)
    referenced = {i.ReferencedSOPInstanceUID for s in pydicom.dcmread(out / "b0map_seg.dcm").ReferencedSeriesSequence
                  for i in s.ReferencedInstanceSequence}
    echo1 = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in source_files(folder, SERIES, 1)}
    assert referenced == echo1 and all(int(u.rsplit(".", 1)[1]) < 1000 for u in referenced)


def test_volume_option_reaches_the_reader(echoes, tmp_path):
    folder, _, _, _ = echoes
    out = tmp_path / "out"
    r = cli("segment", folder, "-o", out, "--pipeline", "mr-multiprotocol-unet", "--volume", "2", "--fast",
            "--no-overlay", "--threads", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "b0map_run.json").read_text())
    assert run["input"]["volume"] == {"index": 2, "of": 2, "EchoTime": "6.46"} and run["options"]["volume"] == 2
    r = cli("segment", folder, "-o", tmp_path / "bad", "--volume", "3", "--quiet")
    assert r.returncode == 2 and "--volume 3: the series holds 2 image set(s)" in r.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    r = cli("segment", folder, "-o", tmp_path / "bad0", "--volume", "0")
    assert r.returncode == 2 and "--volume" in r.stderr


def test_info_lists_the_image_sets(echoes):
    folder, _, _, _ = echoes
    r = cli("info", folder)
    assert r.returncode == 0, r.stderr
    assert "image sets: 2 images at each slice position (1: EchoTime 4.0; 2: EchoTime 6.46); shown: set 1" in r.stdout


def test_4d_parrec_needs_a_volume():
    """A Philips PAR/REC with three dynamics (nibabel's own test phantom, as its wheel ships it)."""
    par = Path(nib.__file__).parent / "tests" / "data" / "phantom_EPI_asc_CLEAR_2_1.PAR"
    if not par.exists():
        pytest.skip("nibabel's test data not installed")
    with pytest.raises(InputError, match=r"got 4D with shape \(64, 64, 9, 3\); choose one volume with --volume N"):
        check_volume(read_image(par))
    second = check_volume(read_image(par, volume=2))
    assert second.shape == (64, 64, 9)
    assert np.allclose(second.array, nib.load(par).get_fdata()[..., 1])
    with pytest.raises(InputError, match=r"--volume 4: the file holds 3 volume"):
        read_image(par, volume=4)


def _enhanced(series: Path, folder: Path) -> Path:
    """The series as one enhanced multi-frame MR object (highdicom's legacy conversion, as PACS
    and newer scanners export them)."""
    import logging

    import highdicom as hd

    logging.getLogger("highdicom").setLevel(logging.ERROR)  # unset optional attributes, one line each
    folder.mkdir()
    datasets = [pydicom.dcmread(f) for f in sorted(series.iterdir())]
    hd.legacy.LegacyConvertedEnhancedMRImage(datasets, series_instance_uid=hd.UID(), series_number=2,
                                             sop_instance_uid=hd.UID(), instance_number=1).save_as(folder / "mf.dcm")
    return folder


def test_enhanced_multiframe_reads_like_the_series(echoes, tmp_path):
    """Before: ValueError (SimpleITK's series reader made a 4D image of the one file). Now the
    frames are read by position: the same voxels and affine as the one-file-per-slice series,
    and a two-echo object splits into its echoes as the series does."""
    folder, single, _, _ = echoes
    one = _enhanced(single, tmp_path / "one")
    for a, b in ((read_image(one), read_image(single)), (read_image(_enhanced(folder, tmp_path / "two")), read_image(folder)),
                 (read_image(tmp_path / "two", volume=2), read_image(folder, volume=2))):
        assert a.shape == b.shape == (128, 128, 11)
        assert np.array_equal(a.array, b.array) and np.allclose(a.affine, b.affine, atol=1e-3)
    sets = image_sets([str(tmp_path / "two" / "mf.dcm")], tmp_path / "two")
    assert [(s.attributes, len(s.frames)) for s in sets] == [({"EchoTime": "4.0"}, 11), ({"EchoTime": "6.46"}, 11)]


def test_enhanced_multiframe_segments_to_nifti_not_seg(echoes, tmp_path):
    folder, _, _, _ = echoes
    two = _enhanced(folder, tmp_path / "two")
    r = cli("segment", two, "-o", tmp_path / "seg", "--output-type", "dicom-seg", "--quiet")
    assert r.returncode == 2 and "mf.dcm is a multi-frame DICOM object; DICOM SEG and RTSTRUCT output" in r.stderr
    assert not (tmp_path / "seg").exists() or not any((tmp_path / "seg").iterdir())
    r = cli("segment", two, "-o", tmp_path / "out", "--pipeline", "mr-multiprotocol-unet", "--fast", "--no-overlay",
            "--threads", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "two_run.json").read_text())["input"]["volume"] == {
        "index": 1, "of": 2, "EchoTime": "4.0"}
    assert np.asarray(nib.load(tmp_path / "out" / "two_seg.nii.gz").dataobj).any()


def test_multiframe_without_frame_positions_is_refused(echoes, tmp_path):
    _, single, _, _ = echoes
    ds = pydicom.dcmread(_enhanced(single, tmp_path / "mf") / "mf.dcm")
    del ds.PerFrameFunctionalGroupsSequence  # frames without positions: a cine or a legacy multi-frame object
    (tmp_path / "bare").mkdir()
    ds.save_as(tmp_path / "bare" / "mf.dcm")
    with pytest.raises(InputError, match=r"bare: mf.dcm: a multi-frame DICOM object without per-frame slice positions"):
        read_image(tmp_path / "bare")


def test_dixon_images_of_one_echo_need_a_choice(tmp_path):
    """Water and fat images of one echo differ in ImageType only: which one to segment is the
    user's call, not the reader's (set 1 would be whichever name sorts first)."""
    e1, e2 = _echoes(tmp_path)
    folder = _write(tmp_path / "dixon", [(e1, {"0008|0008": "DERIVED\\PRIMARY\\W\\DIXON"}),
                                         (e2, {"0008|0008": "DERIVED\\PRIMARY\\F\\DIXON"})])
    with pytest.raises(InputError, match=r"dixon: the series holds 2 images at each slice position \(1: ImageType "
                                         r"DERIVED\\PRIMARY\\F\\DIXON; 2: ImageType DERIVED\\PRIMARY\\W\\DIXON\)"):
        read_image(folder)
    assert _total(read_image(folder, volume=2).array) == _total(nib.load(e1).dataobj)


def test_cd_export_tree_is_read_as_its_series(echoes, tmp_path):
    """A CD / PACS export: DICOMDIR at the top, the files two folders down without extensions.
    GDCM scans one folder and found nothing; the tree's files are now read as a zip's are."""
    import shutil

    folder, single, _, _ = echoes
    root = tmp_path / "export"
    deep = root / "DICOM" / "S0001"
    deep.mkdir(parents=True)
    for i, f in enumerate(sorted(single.iterdir())):
        shutil.copyfile(f, deep / f"I{i:04d}")
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # a stand-in: not an image, must be skipped
    image = read_image(root)
    assert image.source == root and np.array_equal(image.array, read_image(single).array)
    out = tmp_path / "out"
    r = cli("segment", root, "-o", out, "--pipeline", "mr-multiprotocol-unet", "--fast", "--no-overlay", "--threads", "2",
            "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.asarray(nib.load(out / "export_seg.nii.gz").dataobj).any()
    assert sorted(p.name for p in deep.iterdir()) == [f"I{i:04d}" for i in range(11)]  # nothing written into the input
    shutil.copytree(folder, root / "DICOM" / "S0002")  # a second series: the user must choose, as in a flat folder
    r = cli("segment", root, "-o", tmp_path / "two", "--quiet")
    assert r.returncode == 2 and f"{root}: holds 2 DICOM series" in r.stderr and "kidneyseg-tree" not in r.stderr


def test_slice_positions_cluster_without_rounding_boundaries():
    from kidneyseg.io.image_sets import slice_positions

    # 10.004 and 10.006 straddle a 0.01 mm rounding boundary; they are one slice, 15.0 another
    assert slice_positions([10.004, 15.0, 10.006, 14.99]) == [10.004, 14.99, 10.004, 14.99]


def test_order_and_default_choice_on_attributes():
    """GE marks phase in a private tag, enhanced objects in ComplexImageComponent: magnitude first,
    then the shortest echo; an inversion-time series is never chosen for the user."""
    from kidneyseg.io.image_sets import ImageSet, _order, choose_image_set

    ge = [{"GE image kind": "1", "EchoTime": "2.2"}, {"GE image kind": "0", "EchoTime": "4.4"},
          {"GE image kind": "0", "EchoTime": "2.2"}]
    assert sorted(ge, key=_order) == [ge[2], ge[1], ge[0]]
    frames = [{"ComplexImageComponent": "PHASE", "EchoTime": "1.0"}, {"ComplexImageComponent": "MAGNITUDE", "EchoTime": "5.0"}]
    assert sorted(frames, key=_order)[0] == frames[1]
    sets = [ImageSet([], i, 2, a) for i, a in enumerate(sorted(ge[:2], key=_order), start=1)]
    assert choose_image_set(sets, None, "x").attributes == {"GE image kind": "0", "EchoTime": "4.4"}
    with pytest.raises(InputError, match="choose one with --volume N"):
        choose_image_set([ImageSet([], 1, 2, {"InversionTime": "100"}), ImageSet([], 2, 2, {"InversionTime": "900"})],
                         None, "x")


def test_one_file_of_a_multi_echo_series_is_read_as_its_series(echoes, tmp_path):
    """A `.dcm` file given as input stands for its series: the run records and warns about the
    image set as for the folder."""
    folder, _, _, _ = echoes
    r = cli("segment", folder / "z_000.dcm", "-o", tmp_path / "out", "--pipeline", "mr-multiprotocol-unet", "--fast",
            "--no-overlay", "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert "z_000.dcm: the series holds 2 images at each slice position; segmenting image set 1 of 2" in r.stderr
    run = json.loads((tmp_path / "out" / "z_000_run.json").read_text())
    assert run["input"]["volume"] == {"index": 1, "of": 2, "EchoTime": "4.0"}


def test_enhanced_multiframe_agrees_with_highdicom_volume(echoes, tmp_path):
    """highdicom builds a volume from a one-set enhanced object (it refuses several frames per
    position, hence kidneyseg's own grouping): every voxel of ours sits at the same patient
    position with the same value as in highdicom's."""
    import highdicom as hd

    from kidneyseg.io.orientation import LPS_TO_RAS

    _, single, _, _ = echoes
    one = _enhanced(single, tmp_path / "one")
    ours = read_image(one)
    theirs = hd.imread(str(one / "mf.dcm")).get_volume(dtype=np.float64)
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, n, 200) for n in ours.shape] + [np.ones(200, int)])
    lps = np.linalg.inv(LPS_TO_RAS) @ ours.affine @ idx  # (4, 200) patient positions in mm
    k = np.linalg.inv(theirs.affine) @ lps  # highdicom's (slice, row, column) indices
    assert np.abs(k - np.rint(k)).max() < 1e-3
    k = np.rint(k[:3]).astype(int)
    assert np.array_equal(theirs.array[k[0], k[1], k[2]], ours.array[idx[0], idx[1], idx[2]])
