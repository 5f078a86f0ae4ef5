"""DICOM SEG output: `kidneyseg segment --output-type both` on a DICOM series made from the
bundled real MRI case; the SEG read back equals the NIfTI mask voxel by voxel."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pydicom
import pytest

from kidneyseg.api import example_dir
from kidneyseg.errors import InputError
from kidneyseg.io import Image, read_image
from kidneyseg.io.dicom_seg import read_dicom_seg, write_dicom_seg

from ..conftest import cli, write_dicom_series

SERIES = "1.2.826.0.1.3680043.2.1125.1.3939"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_dicom_series(example_dir() / "image_39.nii.gz", tmp_path_factory.mktemp("dcm") / "case39", series_uid=SERIES)


def test_segment_writes_dicom_seg_equal_to_the_nifti_mask(series, tmp_path):
    out = tmp_path / "out"
    r = cli("segment", series, "-o", out, "--output-type", "both", "--threads", "2")  # not --quiet: INFO logging on
    assert r.returncode == 0, r.stderr
    assert "copy attributes" not in r.stderr  # highdicom's INFO chatter, nine lines per SEG before
    nifti = nib.load(out / "case39_seg.nii.gz")
    mask = np.asarray(nifti.dataobj)
    assert set(np.unique(mask)) == {0, 1, 2}
    segments, names = read_dicom_seg(out / "case39_seg.dcm", series)
    assert names == {1: "kidney_right", 2: "kidney_left"}
    assert segments.shape == mask.shape and np.array_equal(segments, mask)  # voxel by voxel
    ds = pydicom.dcmread(out / "case39_seg.dcm")
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES
    from kidneyseg import __version__

    assert ds.SoftwareVersions == __version__  # was "0" (issue 25: provenance)
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "kidneyseg mr-auto mr_multiprotocol_kidney" and algorithm.AlgorithmVersion == __version__
    codes = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
              s.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning) for s in ds.SegmentSequence]
    assert codes == [("kidney_right", "9846003", "Anatomical Structure"), ("kidney_left", "18639004", "Anatomical Structure")]
    assert ds.StudyInstanceUID == SERIES + ".0" and ds.PatientID == "KS0001"
    import highdicom as hd

    from kidneyseg.labels import display_rgb

    for s in ds.SegmentSequence:  # the viewer colour of each segment, as in the overlays (CIELab, issue 25)
        rgb = hd.color.CIELabColor.from_dicom_value(tuple(s.RecommendedDisplayCIELabValue)).to_rgb()
        assert max(abs(a - b) for a, b in zip(rgb, display_rgb(s.SegmentLabel))) <= 1
    assert (out / "case39_seg.ctbl").read_text().splitlines()[3].startswith("1 kidney_right ")
    assert '"kidney_left"' in (out / "case39_seg.itksnap.txt").read_text()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_dicom_seg_needs_a_dicom_input(tmp_path):
    r = cli("segment", example_dir() / "image_39.nii.gz", "-o", tmp_path / "o", "--output-type", "dicom-seg",
            "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "image_39.nii.gz: --output-type dicom-seg needs a DICOM series folder" in r.stderr
    assert not (tmp_path / "o").exists()


def test_empty_mask_and_uncoded_label(series, tmp_path):
    img = read_image(series)
    empty = Image(np.zeros(img.shape, np.uint8), img.affine)
    write_dicom_seg(empty, {1: "kidney_right", 2: "kidney_left"}, series, tmp_path / "empty.dcm")
    segments, names = read_dicom_seg(tmp_path / "empty.dcm", series)
    assert names == {1: "kidney_right", 2: "kidney_left"} and not segments.any()
    odd = np.zeros(img.shape, np.uint8)
    odd[10:20, 10:20, 3] = 5
    with pytest.raises(InputError, match="label 5 .'spleen'. has no coded concept"):
        write_dicom_seg(Image(odd, img.affine), {5: "spleen"}, series, tmp_path / "odd.dcm")
    with pytest.raises(InputError, match="do not match the mask's shape"):
        write_dicom_seg(Image(odd[:, :, :10], img.affine), {5: "kidney"}, series, tmp_path / "short.dcm")


def test_series_selection_rules(series, tmp_path):
    """A folder with two series of the same real case (one described 'T2 SPIR', one 'scout'
    with fewer slices): no rule is a clear error listing both; UID, largest and description
    each pick the right one; a rule matching nothing names the series."""
    import shutil

    from kidneyseg.io.readers import resolve_series

    folder = tmp_path / "two"
    shutil.copytree(series, folder)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "T2 SPIR"
        ds.save_as(f)
    scout = write_dicom_series(example_dir() / "image_39.nii.gz", tmp_path / "scout", series_uid=SERIES + ".7")
    for f in sorted(scout.iterdir())[:10]:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "scout"
        ds.save_as(folder / ("scout_" + f.name))
    with pytest.raises(InputError, match=r"holds 2 DICOM series: .*'T2 SPIR'.*'scout'.*--series"):
        resolve_series(folder)
    assert resolve_series(folder, "largest") == SERIES
    assert resolve_series(folder, "description:spir") == SERIES
    assert resolve_series(folder, "description:SCOUT") == SERIES + ".7"
    assert resolve_series(folder, SERIES + ".7") == SERIES + ".7"
    with pytest.raises(InputError, match="0 series match"):
        resolve_series(folder, "description:dixon")
    img = read_image(folder, series_uid="description:spir")
    assert img.shape == (256, 256, 31)


def test_info_names_modality_and_pipeline(series, tmp_path):
    r = cli("info", series)
    assert r.returncode == 0 and "modality: MR" in r.stdout and "pipeline: mr-auto" in r.stdout
    from PIL import Image as PILImage

    frame = (np.random.default_rng(0).random((64, 96)) * 255).astype(np.uint8)
    PILImage.fromarray(frame).save(tmp_path / "us.png")
    r = cli("info", tmp_path / "us.png")
    assert r.returncode == 0 and "(64, 96) (2D frame" in r.stdout and "pipeline: us-ensemble" in r.stdout


def test_zipped_series_in_and_seg_out(series, tmp_path):
    import zipfile

    z = tmp_path / "exam.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(series.iterdir()):
            zf.write(f, f"study/series1/{f.name}")
    out = tmp_path / "out"
    r = cli("segment", z, "-o", out, "--output-type", "both", "--quiet", "--no-overlay", "--threads", "2")
    assert r.returncode == 0, r.stderr
    segments, names = read_dicom_seg(out / "exam_seg.dcm", series)  # references the zipped instances
    assert np.array_equal(segments, np.asarray(nib.load(out / "exam_seg.nii.gz").dataobj))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.dcm", b"x")
    r = cli("segment", evil, "-o", tmp_path / "o2", "--quiet")
    assert r.returncode == 2 and "unsafe member name '../escape.dcm'" in r.stderr
    assert not (tmp_path / "escape.dcm").exists()


def test_mixed_orientations_in_one_series_are_refused(series, tmp_path):
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(series, folder)
    f = sorted(folder.iterdir())[5]
    ds = pydicom.dcmread(f)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9950042, 0.0998334]  # tilted by 5.7 degrees
    ds.save_as(f)
    with pytest.raises(InputError, match="mixed orientations in one series: slice"):
        read_image(folder)


def test_a_series_without_frame_of_reference_is_refused_before_segmenting(series, tmp_path, monkeypatch):
    """A DICOM SEG must share its source's FrameOfReferenceUID; without one, highdicom raised a
    ValueError after the model had run (exit 1, internal error). Now: one line, exit 2, nothing
    written, and no model loaded."""
    import shutil

    from kidneyseg import pipelines

    src = tmp_path / "nofor"
    shutil.copytree(series, src)
    for f in src.iterdir():
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    monkeypatch.setattr(pipelines.PipelineSpec, "load", lambda *a, **k: pytest.fail("model loaded"))
    r = cli("segment", src, "-o", tmp_path / "out", "--output-type", "dicom-seg")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "has no FrameOfReferenceUID" in r.stderr
    assert not (tmp_path / "out").exists()


def test_rtstruct_contours_lie_on_the_mask_they_trace(series, tmp_path):
    """--output-type rtstruct (rt-utils): one ROI per kidney, referencing the series' frame of
    reference, every contour point (patient mm, LPS) within one voxel of that kidney's mask on
    its slice, found through kidneyseg's own affine (an independent check of rt-utils' slice
    order and axis order)."""
    out = tmp_path / "out"
    r = cli("segment", series, "-o", out, "--output-type", "rtstruct", "--no-tta", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and not (out / "case39_seg.nii.gz").exists()
    ds = pydicom.dcmread(out / "case39_rtstruct.dcm")
    assert ds.Modality == "RTSTRUCT"
    src = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == src.FrameOfReferenceUID
    names = {roi.ROINumber: roi.ROIName for roi in ds.StructureSetROISequence}
    assert sorted(names.values()) == ["kidney_left", "kidney_right"]
    # the mask the contours came from: the same case as NIfTI on the DICOM grid
    r = cli("segment", series, "-o", tmp_path / "nii", "--no-tta", "--quiet", "--no-overlay")
    assert r.returncode == 0, r.stderr
    seg = nib.load(tmp_path / "nii" / "case39_seg.nii.gz")
    mask, inv = np.asarray(seg.dataobj), np.linalg.inv(seg.affine)
    value = {"kidney_right": 1, "kidney_left": 2}
    from scipy import ndimage

    checked = 0
    for contour_set in ds.ROIContourSequence:
        kidney = ndimage.binary_dilation(mask == value[names[contour_set.ReferencedROINumber]], np.ones((3, 3, 3)))
        for contour in contour_set.ContourSequence:
            lps = np.asarray(contour.ContourData, float).reshape(-1, 3)
            ras = lps * [-1, -1, 1]
            ijk = np.rint(np.c_[ras, np.ones(len(ras))] @ inv.T)[:, :3].astype(int)
            assert kidney[ijk[:, 0], ijk[:, 1], ijk[:, 2]].all()
            checked += len(ijk)
    assert checked > 100
