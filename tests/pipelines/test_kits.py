"""CT pipeline ``kits-unet3d`` (issue 6): phantoms, regions, resampling, oversampling on the
real KiTS masks, CT checks, and a short train -> segment run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from kidneyseg.datasets.ct_phantom import make_ct_phantom, write_kits_phantoms
from kidneyseg.errors import InputError
from kidneyseg.io import Image
from kidneyseg.preprocess.resample import resample_volume
from kidneyseg.specs.kits import check_ct, labels_from_regions, regions_from_labels

KITS19 = Path(__file__).resolve().parents[3] / "shared" / "data" / "kits_masks" / "kits19"


def test_phantom_has_realistic_hu_kidney_sizes_and_any_orientation():
    ras = make_ct_phantom(3, n_tumours=1, n_cysts=1)
    ipl = make_ct_phantom(3, n_tumours=1, n_cysts=1, orientation="IPL")
    assert nib.aff2axcodes(ipl.affine) == ("I", "P", "L") and ipl.image.shape == ras.image.shape[::-1]
    # the same world content: reorienting the IPL copy back gives the RAS arrays
    back = nib.as_closest_canonical(nib.Nifti1Image(ipl.labels, ipl.affine))
    assert np.array_equal(np.asarray(back.dataobj), ras.labels) and np.allclose(back.affine, ras.affine)
    voxel_ml = np.prod(ras.spacing_mm) / 1000
    kidney_and_masses = (ras.labels > 0).sum() * voxel_ml
    assert 180 < kidney_and_masses < 420  # two kidneys of 100-190 mL plus lesions
    img = ras.image.astype(float)
    assert abs(np.median(img[ras.labels == 3]) - 10) < 25  # cyst ~ 0-20 HU
    assert abs(np.median(img[ras.labels == 2]) - 75) < 25  # tumour ~ 60-90 HU
    assert np.percentile(img, 1) < -900  # air
    kidney = img[ras.labels == 1]
    assert np.percentile(kidney, 90) > 130  # enhancing cortex
    from scipy import ndimage

    for n in (1, 2, 3):
        ph = make_ct_phantom(10 + n, n_kidneys=n, n_tumours=0, n_cysts=0)
        assert ndimage.label(ph.labels > 0)[1] == n and len(ph.kidney_centres_mm) == n


def test_regions_are_nested_and_map_back_to_labels():
    labels = np.array([0, 1, 2, 3, 1, 0], np.uint8)
    regions = regions_from_labels(labels)
    assert regions.tolist() == [[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]]
    assert np.array_equal(labels_from_regions(regions > 0.5), labels)
    # a tumour prediction outside any mass or kidney is dropped
    stray = np.zeros((3, 1), bool)
    stray[2] = True
    assert labels_from_regions(stray).tolist() == [0]


def test_region_loss_is_binary_cross_entropy_per_channel_unlike_monai_dicece():
    """MONAI's DiceCELoss(sigmoid=True) uses a softmax cross-entropy across channels when there
    are several, which does not fit nested multi-label regions; our RegionLoss uses BCE."""
    from monai.losses import DiceCELoss, DiceLoss

    from kidneyseg.training.kits import RegionLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8)
    target = torch.from_numpy(regions_from_labels(np.random.default_rng(0).integers(0, 4, (2, 8, 8, 8))))
    target = target.permute(1, 0, 2, 3, 4).contiguous()
    ours = RegionLoss()(logits, target)
    expected = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)(logits, target) + \
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(ours, expected)
    monai = DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)(logits, target)
    assert not torch.allclose(ours, monai, atol=1e-3)


def test_resampling_keeps_the_field_of_view_and_label_values():
    a = np.zeros((40, 30, 12), np.uint8)
    a[10:30, 5:25, 3:9] = 2
    a[15:20, 10:15, 4:6] = 3
    r = resample_volume(a, (1.0, 1.0, 5.0), (2.0, 2.0, 2.0), order=0)
    assert r.shape == (20, 15, 30) and set(np.unique(r)) == {0, 2, 3}
    # the labelled volume in mm^3 is kept to within a voxel layer
    assert abs((r == 2).sum() * 8 - (a == 2).sum() * 5) / ((a == 2).sum() * 5) < 0.15
    back = resample_volume(r, (2.0, 2.0, 2.0), (1.0, 1.0, 5.0), order=0)
    assert back.shape == a.shape and (back == a).mean() > 0.97
    img = np.linspace(0, 1, 40 * 30 * 12, dtype=np.float32).reshape(40, 30, 12)
    assert resample_volume(img, (1.0, 1.0, 5.0), (1.0, 1.0, 5.0), order=3) is img or np.array_equal(
        resample_volume(img, (1.0, 1.0, 5.0), (1.0, 1.0, 5.0), order=3), img)


def test_ct_checks_refuse_non_hu_and_single_slices(tmp_path):
    ph = make_ct_phantom(0, spacing_mm=(4.0, 4.0, 6.0))
    ok = Image(ph.image.astype(np.float32), ph.affine, tmp_path / "ct.nii.gz")
    check_ct(ok)
    raw = Image(ph.image.astype(np.float32) + 1024, ph.affine, tmp_path / "raw.nii.gz")  # no rescale intercept
    with pytest.raises(InputError, match=r"raw.nii.gz: intensities do not look like HU"):
        check_ct(raw)
    one = Image(ph.image[:, :, :1].astype(np.float32), ph.affine, tmp_path / "one.nii.gz")
    with pytest.raises(InputError, match=r"one.nii.gz: a single slice"):
        check_ct(one)


@pytest.mark.skipif(not KITS19.is_dir(), reason="../shared/data/kits_masks absent")
def test_foreground_oversampling_on_a_real_kits_mask():
    """On KiTS19 case 4 (64 x 512 x 512 at 4 x 0.98 x 0.98 mm, IPL), resampled to 2 mm: every
    foreground patch holds foreground, tumour is drawn as often as kidney, foreground patches
    hold far more foreground than uniform ones, and redrawing towards the paper's "a third of
    the patch" raises the foreground share over a single draw. (At 48^3 voxels of 2 mm the
    kidney fills at most about a quarter of the patch, so the third itself is not reachable.)"""
    from kidneyseg.io import read_image, to_canonical
    from kidneyseg.training.kits import KitsVolume, sample_patch

    lab, _ = to_canonical(read_image(KITS19 / "case_00004" / "segmentation.nii.gz"))
    labels = resample_volume(np.asarray(lab.array, np.uint8), lab.spacing_mm, (2.0, 2.0, 2.0), 0)
    fg = {int(v): np.flatnonzero(labels == v) for v in (1, 2) if (labels == v).any()}
    vol = KitsVolume("case_00004", labels.astype(np.float32), labels, fg)
    rng = np.random.default_rng(0)
    patch = (48, 48, 48)
    fg_draws = [sample_patch(vol, patch, rng, True, min_fraction=1 / 3, tries=10) for _ in range(60)]
    uniform = [sample_patch(vol, patch, rng, False)[2] for _ in range(60)]
    fracs = np.array([d[2] for d in fg_draws])
    assert np.all(fracs > 0)
    assert fracs.mean() > 5 * np.mean(uniform)
    with_tumour = np.mean([(d[1] == 2).any() for d in fg_draws])
    assert with_tumour > 0.4  # a random class first, then a voxel of it
    single = np.array([sample_patch(vol, patch, rng, True, min_fraction=1 / 3, tries=1)[2] for _ in range(60)])
    assert fracs.mean() > single.mean() + 0.03 and fracs.max() < 1 / 3


def test_kits_unet3d_plan_train_resume_segment_through_the_cli(tmp_path, capsys):
    """The CLI entry point in-process (subprocess start-up costs are tested elsewhere)."""
    from kidneyseg.cli import main

    data = write_kits_phantoms(tmp_path / "kits", [0, 1, 2], spacings=((3.0, 3.0, 4.0),))
    plan = tmp_path / "plan.json"
    assert main(["plan", str(data), "-o", str(plan), "--memory-gb", "1.0", "--quiet"]) == 0
    saved = json.loads(plan.read_text())
    saved["plan"]["filters"] = [4 * 2 ** i for i in range(len(saved["plan"]["filters"]))]  # a user override
    plan.write_text(json.dumps(saved))
    model = tmp_path / "model"
    train = ["train", "--pipeline", "kits-unet3d", "--dataset", str(data), "--plan", str(plan),
             "--iterations", "3", "-o", str(model), "--device", "cpu", "--quiet"]
    assert main(train) == 0
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["pipeline"] == "kits-unet3d" and cfg["plan"]["filters"][0] == 4 and cfg["config"]["iterations"] == 3
    summary = json.loads((model / "training_summary.json").read_text())
    assert len(summary["loss_history"]) == 3 and all(np.isfinite(summary["loss_history"]))
    weights = (model / "model.pt").read_bytes()
    assert main(train) == 0
    assert (model / "model.pt").read_bytes() == weights  # finished: nothing retrained
    case = data / "case_00000" / "imaging.nii.gz"  # stored IPL
    out = tmp_path / "out"
    assert main(["segment", "--pipeline", "kits-unet3d", "--model", str(model), str(case), "-o", str(out),
                 "--device", "cpu", "--quiet", "--no-overlay"]) == 0
    seg = nib.load(str(out / "imaging_seg.nii.gz"))
    src = nib.load(str(case))
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    volumes = (out / "volumes.json").read_text()
    for key in ("kidney_right_ml", "kidney_left_ml", "tumor_ml", "cyst_ml"):
        assert key in volumes
    # non-HU input: one line, exit 2, nothing written
    raw = nib.load(str(case))
    nib.save(nib.Nifti1Image(np.asarray(raw.dataobj).astype(np.int16) + 1024, raw.affine), str(tmp_path / "raw.nii.gz"))
    capsys.readouterr()
    assert main(["segment", "--pipeline", "kits-unet3d", "--model", str(model), str(tmp_path / "raw.nii.gz"),
                 "-o", str(tmp_path / "out2"), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "HU" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out2" / "raw_seg.nii.gz").exists()


def test_training_refuses_a_mask_only_dataset_and_a_foreign_label(tmp_path):
    from kidneyseg.datasets.layouts import kits_cases
    from kidneyseg.planning import make_plan, fingerprint
    from kidneyseg.specs.kits import KitsConfig
    from kidneyseg.training.kits import train_kits_unet3d

    data = write_kits_phantoms(tmp_path / "kits", [5], spacings=((4.0, 4.0, 6.0),))
    cases = kits_cases(data)
    plan = make_plan(fingerprint(cases), 1.0, base_filters=4)
    seg = data / "case_00005" / "segmentation.nii.gz"
    img = nib.load(str(seg))
    bad = np.asarray(img.dataobj).copy()
    bad[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(bad, img.affine), str(seg))
    with pytest.raises(InputError, match=r"segmentation.nii.gz: label value\(s\) \[7\]"):
        train_kits_unet3d(KitsConfig(iterations=1), cases, tmp_path / "m", plan, progress=False)
    (data / "case_00005" / "imaging.nii.gz").unlink()
    with pytest.raises(InputError, match="imaging.nii.gz"):
        kits_cases(data)
