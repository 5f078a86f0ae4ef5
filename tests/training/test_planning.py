"""KiTS reader and nnU-Net-style planning (issue 6): fingerprints of the real KiTS masks'
geometry, the plan's rules, overrides, and bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.datasets.layouts import kits_cases, list_cases
from kidneyseg.errors import InputError
from kidneyseg.planning import Plan, estimate_memory_gb, fingerprint, make_plan

from ..conftest import cli

KITS19 = Path(__file__).resolve().parents[3] / "shared" / "data" / "kits_masks" / "kits19"
needs_kits = pytest.mark.skipif(not KITS19.is_dir(), reason="../shared/data/kits_masks absent")


def _kits_folder(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """Write ``case_X/imaging.nii.gz`` + ``segmentation.nii.gz`` from (image, labels, affine)."""
    for cid, (image, labels, affine) in cases.items():
        d = root / cid
        d.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image.astype(np.int16), affine), str(d / "imaging.nii.gz"))
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(d / "segmentation.nii.gz"))
    return root


def _ipl_case(rng, shape_zyx=(40, 48, 56), spacing_zyx=(2.5, 0.8, 0.8)):
    """A small CT-like case stored as KiTS19 stores its files: axes (z, y, x), IPL affine."""
    image = rng.normal(-100, 20, shape_zyx)
    labels = np.zeros(shape_zyx, np.uint8)
    labels[10:30, 10:30, 8:24] = 1
    labels[15:20, 15:20, 12:16] = 2
    image[labels == 1] = 150 + rng.normal(0, 10, int((labels == 1).sum()))
    image[labels == 2] = 80
    affine = np.zeros((4, 4))
    affine[0, 2] = -spacing_zyx[2]  # file axes (0, 1, 2) run I, P, L, as in KiTS19
    affine[1, 1] = -spacing_zyx[1]
    affine[2, 0] = -spacing_zyx[0]
    affine[3, 3] = 1
    return image, labels, affine


@needs_kits
def test_kits_reader_on_the_real_masks():
    cases = kits_cases(KITS19, require_images=False)
    assert [c.case_id for c in cases] == [f"case_{i:05d}" for i in range(10)]
    assert all(c.image is None and c.label.name == "segmentation.nii.gz" for c in cases)
    assert cases[0].file_labels == {1: "kidney", 2: "tumor", 3: "cyst"}
    with pytest.raises(InputError, match=r"case_00000.*imaging.nii.gz"):
        kits_cases(KITS19)


@needs_kits
def test_fingerprint_of_the_real_kits_geometry_is_in_ras_order():
    """KiTS19 files are (z, y, x) with an IPL affine: the fingerprint reads the axes through the
    affine, so case 0 (611 x 512 x 512 at 0.5 x 0.92 x 0.92 mm in file order) is 512 x 512 x 611
    at 0.92 x 0.92 x 0.5 mm along R, A, S."""
    fp = fingerprint(kits_cases(KITS19, require_images=False), read_labels=False, read_images=False)
    c0 = fp.cases[0]
    assert c0.shape == (512, 512, 611)
    assert c0.spacing_mm[0] == c0.spacing_mm[1] == pytest.approx(0.919922, abs=1e-5) and c0.spacing_mm[2] == 0.5
    assert fp.median_spacing_mm[2] == pytest.approx(2.0)  # slice thicknesses 0.5 .. 4 mm
    assert fp.foreground_intensity == {}


@needs_kits
def test_fingerprint_reads_label_values_of_small_real_cases():
    cases = [c for c in kits_cases(KITS19, require_images=False) if c.case_id in ("case_00004", "case_00007")]
    fp = fingerprint(cases, read_labels=True, read_images=False)
    for c in fp.cases:
        assert set(c.labels_present) <= {1, 2} and 1 in c.labels_present
        assert 0.0 < c.foreground_fraction < 0.05


@needs_kits
def test_plan_from_the_real_kits_geometry_follows_the_rules():
    fp = fingerprint(kits_cases(KITS19, require_images=False), read_labels=False, read_images=False)
    plan = make_plan(fp, memory_budget_gb=8.0, normalisation="case_percentile")
    # median spacing per axis; 2.0 / 0.89 < 3, so no anisotropy rule
    assert plan.target_spacing_mm[2] == pytest.approx(2.0) and plan.target_spacing_mm[0] == pytest.approx(0.8877, abs=1e-3)
    # the coarse S axis: in-plane-only kernel and pooling at the first level, until spacings meet
    assert plan.kernel_sizes[0] == (3, 3, 1) and plan.strides[1] == (2, 2, 1)
    total = np.prod(np.array(plan.strides), axis=0)
    assert np.all(np.array(plan.patch_size) % total == 0)
    bottleneck = np.array(plan.patch_size) // total
    assert np.all(bottleneck >= 4) and np.all(bottleneck < 16)  # "down to about 4 x 4 x 4"
    assert plan.filters[0] == 32 and plan.filters[1] == 64 and max(plan.filters) <= 320
    assert plan.estimated_memory_gb <= 8.0 and plan.batch_size >= 2
    # a larger budget never gives a smaller patch; a smaller one never a larger
    big = make_plan(fp, memory_budget_gb=24.0, normalisation="case_percentile")
    small = make_plan(fp, memory_budget_gb=3.0, normalisation="case_percentile")
    assert np.prod(big.patch_size) * big.batch_size >= np.prod(plan.patch_size) * plan.batch_size
    assert np.prod(small.patch_size) <= np.prod(plan.patch_size) and small.estimated_memory_gb <= 3.0
    # seed 002: 1.99 mm isotropic gives isotropic kernels everywhere
    iso = make_plan(fp, memory_budget_gb=8.0, target_spacing_mm=(1.99, 1.99, 1.99), normalisation="case_percentile")
    assert all(k == (3, 3, 3) for k in iso.kernel_sizes) and iso.strides[1] == (2, 2, 2)
    assert iso.median_shape[2] == pytest.approx(np.median([s * sp for s, sp in zip(fp.shapes[:, 2], fp.spacings[:, 2])]) / 1.99, abs=1)
    with pytest.raises(InputError, match="budget"):
        make_plan(fp, memory_budget_gb=0.5, normalisation="case_percentile")


def test_anisotropy_rule_takes_the_tenth_percentile_of_the_coarse_axis(tmp_path):
    from kidneyseg.planning import CaseFingerprint, DatasetFingerprint

    cases = tuple(CaseFingerprint(str(i), (256, 256, 40), (0.8, 0.8, s)) for i, s in enumerate([5.0] * 8 + [1.0, 2.0]))
    plan = make_plan(DatasetFingerprint(cases), 4.0, normalisation="case_percentile")
    # median 5.0 > 3 x 0.8: the coarse axis takes its 10th percentile (1.9), not the median
    assert plan.target_spacing_mm == pytest.approx((0.8, 0.8, float(np.percentile([5.0] * 8 + [1.0, 2.0], 10))))


def test_fingerprint_is_the_same_for_ipl_and_ras_files_and_samples_foreground_hu(tmp_path):
    rng = np.random.default_rng(0)
    image, labels, affine = _ipl_case(rng)
    ipl = _kits_folder(tmp_path / "ipl", {"case_00000": (image, labels, affine)})
    ras_img = nib.as_closest_canonical(nib.Nifti1Image(image.astype(np.int16), affine))
    ras_lab = nib.as_closest_canonical(nib.Nifti1Image(labels, affine))
    ras = _kits_folder(tmp_path / "ras", {"case_00000": (np.asarray(ras_img.dataobj), np.asarray(ras_lab.dataobj), ras_img.affine)})
    a = fingerprint(kits_cases(ipl))
    b = fingerprint(kits_cases(ras))
    assert a.cases[0].shape == b.cases[0].shape == (56, 48, 40)
    assert a.cases[0].spacing_mm == pytest.approx(b.cases[0].spacing_mm) and a.cases[0].spacing_mm == pytest.approx((0.8, 0.8, 2.5))
    assert a.cases[0].labels_present == (1, 2)
    fi = a.foreground_intensity
    assert fi["p00_5"] < fi["median"] < fi["p99_5"] and 80 <= fi["p00_5"] and fi["median"] == pytest.approx(150, abs=5)
    plan = make_plan(a, 2.0)
    assert plan.normalisation == "ct_clip_zscore" and plan.clip == (fi["p00_5"], fi["p99_5"])
    assert plan.mean == pytest.approx(fi["mean"]) and plan.std == pytest.approx(fi["std"])


def test_plan_json_round_trip_and_overrides(tmp_path):
    from kidneyseg.planning import CaseFingerprint, DatasetFingerprint

    fp = DatasetFingerprint(tuple(CaseFingerprint(str(i), (200, 200, 100), (1.0, 1.0, 1.5)) for i in range(4)))
    plan = make_plan(fp, 3.0, normalisation="case_percentile")
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
    total = np.prod(np.array(plan.strides), axis=0)
    smaller = plan.replace(patch_size=tuple(int(v - t) for v, t in zip(plan.patch_size, total)), batch_size=2)
    assert smaller.estimated_memory_gb < plan.estimated_memory_gb
    with pytest.raises(InputError, match="divisible"):
        plan.replace(patch_size=(plan.patch_size[0] + 1,) + plan.patch_size[1:])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a kidneyseg plan"):
        Plan.load(tmp_path / "bad.json")
    assert estimate_memory_gb((64, 64, 64), (32, 64), ((1, 1, 1), (2, 2, 2)), 4) > estimate_memory_gb(
        (64, 64, 64), (32, 64), ((1, 1, 1), (2, 2, 2)), 2)


def test_bad_datasets_fail_with_a_message_naming_the_file(tmp_path):
    rng = np.random.default_rng(1)
    image, labels, affine = _ipl_case(rng)
    bad_labels = labels.copy()
    bad_labels[0, 0, 0] = 5
    root = _kits_folder(tmp_path / "k", {"case_00000": (image, bad_labels, affine)})
    with pytest.raises(InputError, match=r"case_00000.*segmentation.*label value\(s\) \[5\]"):
        fingerprint(kits_cases(root))
    root2 = _kits_folder(tmp_path / "k2", {"case_00000": (image, labels, affine)})
    for name in ("imaging.nii.gz", "segmentation.nii.gz"):  # no qform/sform, pixdim 0: no spacing
        f = root2 / "case_00000" / name
        img = nib.load(str(f))
        bare = nib.Nifti1Image(np.asarray(img.dataobj), None)
        bare.header["pixdim"][1:4] = 0
        bare.header.set_qform(None, code=0)
        bare.header.set_sform(None, code=0)
        nib.save(bare, str(f))
        raw = bytearray(gzip.decompress(f.read_bytes()))  # nibabel writes 1 for a zero pixdim: patch it
        raw[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1:4] of the NIfTI-1 header
        f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(InputError, match=r"segmentation.nii.gz: missing voxel spacing"):
        fingerprint(kits_cases(root2))
    from kidneyseg.io import read_image

    with pytest.raises(InputError, match=r"imaging.nii.gz: missing voxel spacing"):
        read_image(root2 / "case_00000" / "imaging.nii.gz")
    with pytest.raises(InputError, match="no case_XXXXX"):
        kits_cases(tmp_path)
    with pytest.raises(InputError, match="layout"):
        list_cases(root, "bogus", {1: "kidney"})


def test_plan_command_writes_plan_and_fingerprint(tmp_path):
    rng = np.random.default_rng(2)
    root = _kits_folder(tmp_path / "k", {f"case_{i:05d}": _ipl_case(rng) for i in range(3)})
    out = tmp_path / "plan.json"
    cmd = ["plan", str(root), "-o", str(out), "--memory-gb", "2", "--target-spacing-mm", "1.99", "1.99", "1.99"]
    r = cli(*cmd)
    assert r.returncode == 0, r.stderr
    saved = json.loads(out.read_text())
    assert saved["plan"]["target_spacing_mm"] == [1.99, 1.99, 1.99] and saved["fingerprint"]["n_cases"] == 3
    assert Plan.load(out).estimated_memory_gb <= 2.0
    r = cli(*cmd)
    assert r.returncode == 2 and "exists" in r.stderr
    r = cli("plan", str(root), "-o", str(tmp_path / "no_such_folder" / "plan.json"))
    assert r.returncode == 2 and "no_such_folder does not exist" in r.stderr  # was FileNotFoundError, exit 1
    r = cli(*cmd[:-4], "--memory-gb", "0.3", "--overwrite")
    assert r.returncode == 2 and "budget" in r.stderr and len(r.stderr.strip().splitlines()) == 1
