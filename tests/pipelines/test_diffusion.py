"""Diffusion path of seed 000: tensor maps, EM localisation, crop/uncrop, super-resolution grid."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.datasets.dwi_phantom import gradient_scheme, make_dwi_phantom
from kidneyseg.diffusion import DWI, fit_tensor, read_dwi
from kidneyseg.errors import InputError
from kidneyseg.localize.em import Box, EMConfig, box_from_mask, em_classes, localise
from kidneyseg.preprocess.crop import crop_resize, uncrop
from kidneyseg.preprocess.super_resolution import (SRConfig, ThroughPlaneSR, cubic_upsample, decimate,
                                                   super_resolved_affine, to_original_grid)

from ..conftest import cli


def _write_dwi(folder: Path, dwi: DWI, bvals=None, bvecs=None) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(dwi.data, dwi.affine), str(p))
    bvals = dwi.bvals if bvals is None else bvals
    bvecs = dwi.bvecs if bvecs is None else bvecs
    (folder / "dwi.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    (folder / "dwi.bvec").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in np.asarray(bvecs).T) + "\n")
    return p, folder / "dwi.bval", folder / "dwi.bvec"


@pytest.fixture(scope="module")
def phantom():
    return make_dwi_phantom(seed=3)


def test_tensor_of_a_simulated_voxel_has_its_known_eigenvalues():
    """A noiseless voxel simulated by dipy with eigenvalues (1.7, 0.5, 0.3) e-3 mm^2/s."""
    from dipy.core.gradients import gradient_table
    from dipy.sims.voxel import single_tensor

    bvals, bvecs = gradient_scheme(30, 800.0, n_b0=2)
    gtab = gradient_table(bvals, bvecs=bvecs)
    evals = np.array([1.7e-3, 0.5e-3, 0.3e-3])
    rot = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    signal = single_tensor(gtab, S0=100.0, evals=evals, evecs=rot)
    data = np.broadcast_to(signal, (3, 3, 3, signal.size)).astype(np.float32).copy()
    maps = fit_tensor(DWI(data, np.eye(4), bvals, bvecs), mask=None)
    md = evals.mean()
    fa = np.sqrt(1.5 * np.sum((evals - md) ** 2) / np.sum(evals ** 2))
    np.testing.assert_allclose(maps.md, md, rtol=1e-3)
    np.testing.assert_allclose(maps.ad, evals[0], rtol=1e-3)
    np.testing.assert_allclose(maps.rd, evals[1:].mean(), rtol=1e-3)
    np.testing.assert_allclose(maps.fa, fa, rtol=1e-3)
    d = rot @ np.diag(evals) @ rot.T  # Dxx, Dxy, Dyy, Dxz, Dyz, Dzz
    expect = [d[0, 0], d[0, 1], d[1, 1], d[0, 2], d[1, 2], d[2, 2]]
    np.testing.assert_allclose(maps.tensor[1, 1, 1], expect, atol=2e-6)


def test_phantom_maps_separate_cortex_and_medulla(phantom):
    maps = fit_tensor(phantom.dwi)
    kid = phantom.kidneys > 0
    cortex = kid & ~phantom.medulla
    assert maps.fa[phantom.medulla].mean() > maps.fa[cortex].mean() + 0.1
    assert 1.5e-3 < maps.md[cortex].mean() < 2.2e-3  # mm^2/s


def test_dti_command_writes_maps_on_the_dwi_grid(tmp_path, phantom):
    dwi, bval, bvec = _write_dwi(tmp_path / "in", phantom.dwi)
    out = tmp_path / "maps"
    r = cli("dti", str(dwi), "--bval", str(bval), "--bvec", str(bvec), "-o", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    src = nib.load(str(dwi))
    for name in ("fa", "md", "ad", "rd", "mask"):
        img = nib.load(str(out / f"{name}.nii.gz"))
        assert img.shape == src.shape[:3]
        np.testing.assert_array_equal(img.affine, src.affine)
    assert nib.load(str(out / "tensor.nii.gz")).shape == src.shape[:3] + (6,)
    summary = json.loads((out / "dti.json").read_text())
    assert summary["units"]["md"] == "mm^2/s" and summary["tensor_elements"][1] == "Dxy"


@pytest.mark.parametrize("problem, message", [
    ("count", "b-values for"),
    ("no_b0", "no b=0 volume"),
    ("nonpositive", "non-positive apparent diffusivity"),
])
def test_dti_bad_gradients_fail_with_one_line_and_write_nothing(tmp_path, phantom, problem, message):
    dwi = phantom.dwi
    bvals, bvecs, data = dwi.bvals, dwi.bvecs, dwi.data
    if problem == "count":  # one gradient fewer than DWI volumes
        bvals, bvecs = bvals[:-1], bvecs[:-1]
    elif problem == "no_b0":
        bvals = np.where(bvals == 0, 600.0, bvals)
    else:  # the b=0 volume moved to the end: every "weighted" volume is brighter than "b=0"
        data = np.concatenate([data[..., 1:2], data[..., :1], data[..., 2:]], axis=-1)
    p, bval, bvec = _write_dwi(tmp_path / "in", DWI(data, dwi.affine, dwi.bvals, dwi.bvecs), bvals=bvals,
                                  bvecs=bvecs)
    out = tmp_path / "maps"
    r = cli("dti", str(p), "--bval", str(bval), "--bvec", str(bvec), "-o", str(out))
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_read_dwi_refuses_a_3d_file(tmp_path):
    p = tmp_path / "t2.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(p))
    (tmp_path / "b.bval").write_text("0 600\n")
    (tmp_path / "b.bvec").write_text("0 1\n0 0\n0 0\n")
    with pytest.raises(InputError, match="expected a 4D"):
        read_dwi(p, tmp_path / "b.bval", tmp_path / "b.bvec")


def test_em_recovers_the_classes_of_a_two_class_phantom():
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40, 10), dtype=bool)
    truth[10:30, 12:28, 2:8] = True
    vol = np.where(truth, 0.6, 0.2) + rng.normal(0, 0.05, truth.shape)
    ranks = em_classes(vol, np.ones(vol.shape, bool), EMConfig(n_classes=2, class_ranks=(1, 1)))
    assert np.mean((ranks == 1) == truth) > 0.99


def test_mrf_smoothing_removes_isolated_noise_voxels():
    rng = np.random.default_rng(0)
    truth = np.zeros((30, 30, 8), dtype=bool)
    truth[:, 15:] = True
    vol = np.where(truth, 1.0, 0.0) + rng.normal(0, 0.45, truth.shape)
    mask = np.ones(vol.shape, bool)
    plain = em_classes(vol, mask, EMConfig(n_classes=2, class_ranks=(1, 1), mrf_beta=0.0))
    smooth = em_classes(vol, mask, EMConfig(n_classes=2, class_ranks=(1, 1), mrf_beta=1.0))
    assert np.mean((smooth == 1) == truth) > np.mean((plain == 1) == truth)


def test_box_is_the_projected_rectangle_plus_margin_clipped_to_the_image():
    mask = np.zeros((50, 40, 12), dtype=bool)
    mask[20:25, 30:38, 3] = True
    mask[22:30, 33:36, 9] = True
    box = box_from_mask(mask, slice_axis=2, margin_px=5)
    assert box.lo == (15, 25, 0) and box.hi == (35, 40, 12)  # y clipped at 40, every slice kept
    assert box_from_mask(np.zeros_like(mask), 2) is None


def test_crop_resize_uncrop_round_trip_is_exact_at_the_same_size():
    rng = np.random.default_rng(0)
    vol = rng.random((30, 20, 8)).astype(np.float32)
    box = Box((5, 3, 0), (25, 19, 8), 2)
    same = crop_resize(vol, box, box.shape)
    back = uncrop(same, box, vol.shape)
    np.testing.assert_allclose(back[box.slices], vol[box.slices], atol=1e-6)
    outside = np.ones(vol.shape, bool)
    outside[box.slices] = False
    assert not back[outside].any()
    # through the network size and back: a constant block stays the block
    block = np.zeros(vol.shape, np.float32)
    block[box.slices] = 1.0
    np.testing.assert_allclose(uncrop(crop_resize(block, box, (64, 64, 16)), box, vol.shape), block, atol=1e-6)


def test_no_kidney_class_gives_no_box():
    box, vicinity = localise(np.zeros((20, 20, 6)), (2.0, 2.0, 5.0), EMConfig(class_ranks=(5, 5)),
                             ranks=np.zeros((20, 20, 6), dtype=np.int16))
    assert box is None and not vicinity.any()


def test_super_resolution_grid_is_aligned_with_held_out_slices():
    z = np.arange(60, dtype=np.float32)
    vol = np.broadcast_to(z, (4, 5, 60)).copy()  # intensity = slice index
    low = decimate(vol, 5, axis=2)
    np.testing.assert_array_equal(low[0, 0, :4], [2, 7, 12, 17])
    up = cubic_upsample(low, 5, axis=2)
    # the held-out slices come back at their own positions (a ramp, away from the boundary)
    np.testing.assert_allclose(up[0, 0, 20:40], z[20:40], atol=1e-2)
    np.testing.assert_allclose(to_original_grid(np.repeat(vol, 3, axis=2), 3, axis=2), vol)
    aff = np.diag([1.0, 1.0, 5.0, 1.0])
    sr = super_resolved_affine(aff, 5, axis=2)
    centres = (sr @ np.c_[np.zeros((5, 2)), np.arange(5), np.ones(5)].T)[2]
    assert np.isclose(centres.mean(), 0.0) and np.isclose(sr[2, 2], 1.0)


def test_super_resolution_network_trains_applies_and_restores():
    rng = np.random.default_rng(0)
    vol = rng.random((48, 48, 6)).astype(np.float32)
    sr = ThroughPlaneSR.train([vol], [2], SRConfig(factor=3, steps=3, patch=24, batch=2, features=8, layers=3))
    out = sr.apply(vol, 2)
    assert out.shape == (48, 48, 18) and out.dtype == np.float32
    again = ThroughPlaneSR.from_state(sr.state())
    np.testing.assert_array_equal(again.apply(vol, 2), out)


@pytest.fixture(scope="module")
def phantom_model(tmp_path_factory):
    """A small em-unet3d model trained on 4 phantoms (MD input, FA localiser), on CPU."""
    from kidneyseg.io import Image
    from kidneyseg.specs.em_unet import EMUNetConfig
    from kidneyseg.training.em_unet import TrainCase, train_em_unet

    cases = []
    for seed in range(4):
        p = make_dwi_phantom(seed=10 + seed)
        m = fit_tensor(p.dwi)
        cases.append(TrainCase(str(seed), Image(m.md, p.dwi.affine), p.kidneys > 0, Image(m.fa, p.dwi.affine)))
    out = tmp_path_factory.mktemp("em_model")
    config = EMUNetConfig(input_size=(32, 32, 8), epochs=12, batch_size=4, seed=0)
    train_em_unet(cases, config, out, device="cpu", progress=False)
    return out


def test_em_unet3d_end_to_end_on_a_phantom(tmp_path, phantom, phantom_model):
    """DWI -> kidneyseg dti -> kidneyseg segment --pipeline em-unet3d MD --secondary FA."""
    dwi, bval, bvec = _write_dwi(tmp_path / "in", phantom.dwi)
    maps = tmp_path / "maps"
    r = cli("dti", dwi, "--bval", bval, "--bvec", bvec, "-o", maps, "--quiet")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "seg"
    r = cli("segment", maps / "md.nii.gz", "--pipeline", "em-unet3d", "--model", phantom_model,
            "--secondary", maps / "fa.nii.gz", "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    seg = nib.load(str(out / "md_seg.nii.gz"))
    md = nib.load(str(maps / "md.nii.gz"))
    assert seg.shape == md.shape
    np.testing.assert_array_equal(seg.affine, md.affine)
    row = json.loads((out / "volumes.json").read_text())[0]
    assert row["no_kidney_class"] is False and "box_mm" in row
    pred = np.asarray(seg.dataobj)
    truth = phantom.kidneys
    # the EM box holds the kidneys of an unseen phantom, and each side is found on its side
    for side in (1, 2):
        assert 2 * np.sum((pred == side) & (truth == side)) / (np.sum(pred == side) + np.sum(truth == side)) > 0.6


def test_em_unet3d_refuses_a_localisation_map_on_another_grid(tmp_path, phantom_model):
    from kidneyseg.api import segment
    from kidneyseg.io import Image

    img = Image(np.random.default_rng(0).random((40, 40, 10)).astype(np.float32), np.diag([2.0, 2.0, 5.0, 1.0]))
    other = Image(img.array[:30], img.affine)
    with pytest.raises(InputError, match="differs from the image"):
        segment(img, pipeline="em-unet3d", model=phantom_model, secondary=other)


def test_em_unet3d_flags_an_empty_kidney_class(monkeypatch, phantom, phantom_model):
    from kidneyseg.io import Image
    from kidneyseg.localize import em
    from kidneyseg.pipelines.em_unet3d import EMUNetPipeline

    maps = fit_tensor(phantom.dwi)
    monkeypatch.setattr(em, "em_classes", lambda vol, mask=None, config=None: np.zeros(vol.shape, np.int16))
    res = EMUNetPipeline.load(phantom_model, "cpu").segment(Image(maps.md, phantom.dwi.affine),
                                                            Image(maps.fa, phantom.dwi.affine))
    assert res.qc["no_kidney_class"] is True and res.qc["empty"] is True and not res.mask.array.any()


def test_train_command_em_unet3d_on_an_nnunet_folder_and_resume(tmp_path, nnunet_dataset, capsys):
    """kidneyseg train em-unet3d (the CLI entry point, in-process): writes the model
    with the chosen EM classes; a rerun into the same folder resumes from the finished
    checkpoint (no epoch redone)."""
    from kidneyseg.cli import main

    out = tmp_path / "model"
    cmd = ["train", "em-unet3d", "--dataset", str(nnunet_dataset),
           "--layout", "nnunet", "--epochs", "2", "-o", str(out), "--device", "cpu", "--quiet"]
    assert main(cmd) == 0
    config = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "training_summary.json").read_text())
    assert config["pipeline"] == "em-unet3d" and config["epochs"] == 2
    # the chosen classes and each training case's box recall are recorded (their quality is
    # tested on the DWI phantom above; this fixture has no air around the body)
    assert summary["localiser_fit"]["recall_ok"].endswith("/4") and len(config["em"]["class_ranks"]) == 2
    assert sorted(summary["box_recall"]) == ["k_000", "k_001", "k_002", "k_003"]
    weights = (out / "model.pt").read_bytes()
    assert main(cmd) == 0
    assert (out / "model.pt").read_bytes() == weights
    capsys.readouterr()
    assert main(cmd[:-5] + ["--super-resolution", "0", "-o", str(tmp_path / "m2"), "--quiet"]) == 2
    assert "super_resolution" in capsys.readouterr().err


def test_em_unet3d_cross_validation_writes_per_case_scores(tmp_path, nnunet_dataset):
    from kidneyseg.specs.em_unet import EMUNetConfig
    from kidneyseg.training.em_unet import chaos_train_cases
    from kidneyseg.validation import cross_validate_em as cross_validate

    cases = chaos_train_cases(nnunet_dataset, layout="nnunet")
    summary = cross_validate(cases, EMUNetConfig(epochs=1, input_size=(32, 32, 8)), tmp_path / "cv", folds=2,
                             device="cpu", progress=False)
    assert sorted(summary["cases"]) == ["k_000", "k_001", "k_002", "k_003"]
    assert {c["fold"] for c in summary["cases"].values()} == {0, 1}
    assert all(0.0 <= c["dsc"] <= 1.0 and c["vd"] >= 0.0 for c in summary["cases"].values())
    saved = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert saved["dsc"]["mean"] == pytest.approx(np.mean([c["dsc"] for c in summary["cases"].values()]))
    assert (tmp_path / "cv" / "fold_1" / "model.pt").is_file() and (tmp_path / "cv" / "model.pt").is_file()
    with pytest.raises(InputError, match="folds"):
        cross_validate(cases, EMUNetConfig(epochs=1), tmp_path / "cv2", folds=9, device="cpu", progress=False)


def test_em_unet3d_model_folder_errors(tmp_path):
    from kidneyseg.models.store import default_model_dir
    from kidneyseg.pipelines.em_unet3d import EMUNetPipeline

    with pytest.raises(InputError, match="no model is shipped"):
        EMUNetPipeline.load(None)
    with pytest.raises(InputError, match="not a kidneyseg model folder for em-unet3d"):
        EMUNetPipeline.load(tmp_path)
    with pytest.raises(InputError, match="not em-unet3d"):
        EMUNetPipeline.load(default_model_dir())
