"""`kidneyseg evaluate`: pairing, outputs, KiTS regions on real masks, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kidneyseg.cli import main
from kidneyseg.metrics import METRICS

from ..conftest import SHARED_DATA, save_nifti, sha256

KITS = SHARED_DATA / "kits_masks"
needs_kits = pytest.mark.skipif(not KITS.is_dir(), reason="../shared/data/kits_masks not present")
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _labels(shape=(24, 20, 8)):
    lab = np.zeros(shape, np.uint8)
    lab[3:9, 4:12, 2:6] = 1
    lab[14:20, 4:12, 2:6] = 2
    return lab


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_kits
def test_evaluate_kits_folders_with_unmatched_case(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    for case in ("case_00004", "case_00007"):
        shutil.copy(KITS / "kits19" / case / "segmentation.nii.gz", pred / f"{case}.nii.gz")
    ref.mkdir()
    for case in ("case_00004", "case_00007", "case_00009"):  # 9 has no prediction
        (ref / case).mkdir()
        shutil.copy(KITS / "kits23" / case / "segmentation.nii.gz", ref / case / "segmentation.nii.gz")
    before = {p: sha256(p) for p in list(pred.rglob("*.nii.gz")) + list(ref.rglob("*.nii.gz"))}
    out = tmp_path / "eval"
    assert main(["evaluate", str(pred), str(ref), "-o", str(out), "--regions", "kits", "--quiet"]) == 0
    rows = _rows(out / "metrics.csv")
    assert [(r["case"], r["region"]) for r in rows] == [
        (c, g) for c in ("case_00004", "case_00007") for g in ("kidney_and_masses", "masses", "tumor")]
    assert all(0.5 < float(r["dice"]) <= 1.0 for r in rows)
    summary = {(s["region"], s["metric"]): s for s in _rows(out / "summary.csv")}
    assert summary[("tumor", "dice")]["n"] == "2" and summary[("tumor", "hd95_mm")]["n_inf"] == "0"
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["unmatched_ref"] == ["case_00009"] and doc["unmatched_pred"] == []
    assert all((out / f"plot_{m}.png").stat().st_size > 1000 for m in METRICS)
    assert {p: sha256(p) for p in before} == before
    assert not list(out.glob(".*"))  # no temporary files left


def test_missed_label_is_inf_and_counted(tmp_path):
    ref = _labels()
    pred = ref.copy()
    pred[pred == 2] = 0  # left kidney missed
    p = save_nifti(pred, AFFINE, tmp_path / "a_seg.nii.gz")
    r = save_nifti(ref, AFFINE, tmp_path / "a.nii.gz")
    out = tmp_path / "eval"
    assert main(["evaluate", str(p), str(r), "-o", str(out), "--label-map", "mr_kidneys", "--no-plots",
                 "--quiet"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    left = next(c for c in doc["cases"] if c["region"] == "kidney_left")
    assert left["hd95_mm"] == "inf" and left["dice"] == 0.0 and left["pred_empty"] is True
    s = next(s for s in doc["summary"] if s["region"] == "kidney_left" and s["metric"] == "hd95_mm")
    assert s["n_inf"] == 1 and s["mean"] == "inf"
    right = next(c for c in doc["cases"] if c["region"] == "kidney_right")
    assert right["dice"] == 1.0 and right["hd95_mm"] == 0.0
    assert right["volume_ref_ml"] == pytest.approx(np.count_nonzero(ref == 1) * 0.8 * 0.8 * 2.5 / 1000)
    assert not list(out.glob("plot_*.png"))


def test_cases_lacking_a_label_get_both_empty_rows(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    one = _labels()
    only_right = np.where(one == 2, 0, one).astype(np.uint8)
    for name, lab in (("a", one), ("b", only_right)):
        save_nifti(lab, AFFINE, tmp_path / "p" / f"{name}.nii.gz")
        save_nifti(lab, AFFINE, tmp_path / "r" / f"{name}.nii.gz")
    out = tmp_path / "eval"
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "r"), "-o", str(out), "--no-plots", "--quiet"]) == 0
    rows = _rows(out / "metrics.csv")
    assert [(r["case"], r["region"]) for r in rows] == [("a", "label_1"), ("a", "label_2"), ("b", "label_1"), ("b", "label_2")]
    b2 = rows[3]
    assert (b2["dice"], b2["hd95_mm"], b2["surface_dice"], b2["pred_empty"]) == ("1.0", "0.0", "1.0", "True")


@pytest.mark.parametrize("problem", ["shape", "affine", "absent-label", "not-a-label-mask", "no-pairs"])
def test_bad_pairs_exit_2_naming_the_files(tmp_path, capsys, problem):
    lab = _labels()
    r = save_nifti(lab, AFFINE, tmp_path / "ref.nii.gz")
    args = []
    if problem == "shape":
        p = save_nifti(lab[:-1], AFFINE, tmp_path / "pred.nii.gz")
    elif problem == "affine":
        shifted = AFFINE.copy()
        shifted[0, 3] = 5.0
        p = save_nifti(lab, shifted, tmp_path / "pred.nii.gz")
    elif problem == "absent-label":
        p = save_nifti(lab, AFFINE, tmp_path / "pred.nii.gz")
        args = ["--labels", "3"]
    elif problem == "not-a-label-mask":
        p = save_nifti(lab.astype(np.float32) * 0.5, AFFINE, tmp_path / "pred.nii.gz")
    else:
        (tmp_path / "pd").mkdir()
        (tmp_path / "rd").mkdir()
        save_nifti(lab, AFFINE, tmp_path / "pd" / "x.nii.gz")
        save_nifti(lab, AFFINE, tmp_path / "rd" / "y.nii.gz")
        p, r = tmp_path / "pd", tmp_path / "rd"
    out = tmp_path / "eval"
    assert main(["evaluate", str(p), str(r), "-o", str(out), "--quiet"] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kidneyseg: error:")
    if problem in ("shape", "affine"):
        assert str(p) in err[0] and str(r) in err[0]
    if problem == "absent-label":
        assert "label 3" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_existing_outputs_need_overwrite_subprocess(tmp_path):
    lab = _labels()
    p = save_nifti(lab, AFFINE, tmp_path / "p.nii.gz")
    r = save_nifti(lab, AFFINE, tmp_path / "r.nii.gz")
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "kidneyseg.cli", "evaluate", str(p), str(r), "-o", str(out), "--no-plots", "--quiet"]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr and again.stderr.count("\n") == 1
    assert subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True).returncode == 0


def test_2d_masks_give_areas_in_mm2(tmp_path):
    a = np.zeros((40, 30), np.uint8)
    a[5:20, 5:15] = 1
    b = np.zeros_like(a)
    b[6:21, 5:16] = 1
    aff = np.diag([0.5, 0.75, 1.0, 1.0])
    p, r = save_nifti(a, aff, tmp_path / "p.nii.gz"), save_nifti(b, aff, tmp_path / "r.nii.gz")
    out = tmp_path / "eval"
    assert main(["evaluate", str(p), str(r), "-o", str(out), "--no-plots", "--quiet"]) == 0
    row = _rows(out / "metrics.csv")[0]
    assert float(row["area_pred_mm2"]) == pytest.approx(150 * 0.375)
    assert float(row["area_ref_mm2"]) == pytest.approx(165 * 0.375)
    assert row["volume_pred_ml"] == ""
    assert float(row["dice"]) == pytest.approx(2 * 140 / 315)


def test_evaluate_refuses_a_nan_affine(tmp_path, capsys):
    """NaN in a prediction's affine must not pass the same-grid check (max |A - B| > tol is
    False for NaN) and be scored with volumes from the bad affine."""
    import nibabel as nib

    mask = np.zeros((20, 20, 10), np.uint8)
    mask[5:15, 5:15, 2:8] = 1
    ref = save_nifti(mask, np.diag([1.5, 1.5, 4.0, 1.0]), tmp_path / "a_ref.nii.gz")
    bad_affine = np.diag([1.5, 1.5, 4.0, 1.0])
    bad_affine[0, 3] = np.nan
    img = nib.Nifti1Image(mask, None)
    img.header.set_qform(bad_affine, code=1)
    img.header.set_sform(bad_affine, code=1)
    pred = tmp_path / "a_seg.nii.gz"
    nib.save(img, str(pred))
    assert main(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "ev"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "kidneyseg: error:" in err and not (tmp_path / "ev" / "metrics.csv").exists()
