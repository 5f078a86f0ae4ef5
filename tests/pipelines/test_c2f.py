"""CT pipeline ``c2f-cascade`` (seed 004, issue 6): abnormal kidney count on phantoms with 1, 2
and 3 kidneys, resize/crop round trips, the 3D FCN's class-balanced sampling on a real KiTS
mask, and a short train (with a resume after a crash) -> segment run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from kidneyseg.datasets.ct_phantom import make_ct_phantom, write_kits_phantoms
from kidneyseg.errors import InputError
from kidneyseg.pipelines.c2f_cascade import C2FCascadePipeline, kidney_components, paste_max
from kidneyseg.specs.c2f import C2FConfig, square_resize, square_restore
from kidneyseg.preprocess.resample import resample_volume
from kidneyseg.arrays import crop_around

KITS19 = Path(__file__).resolve().parents[3] / "shared" / "data" / "kits_masks" / "kits19"

TINY = dict(spacing_mm=(2.0, 2.0, 4.0), coarse_size=64, correction_size=(96, 32), fine_size=64,
            channels_2d=(8, 16, 32), channels_3d=(8, 16, 16), tumour_patch=(32, 32, 8), tumour_box_margin=8,
            batch_2d=4, batch_3d=2, res_units=0)


def test_seed_004_threshold_is_10000_voxels_at_its_spacing():
    cfg = C2FConfig()
    assert round(cfg.kidney_threshold_ml * 1000 / np.prod(cfg.spacing_mm), -2) == 10000


@pytest.mark.parametrize("n_kidneys", [1, 2, 3])
def test_abnormal_detection_counts_the_kidneys_of_phantoms(n_kidneys):
    """Seed 004 eq. 5 on the phantoms' reference masks at the working spacing: the count is
    the number of kidneys (a 1- or 3-kidney case is abnormal), and a lesion-sized blob apart
    from the kidneys is not counted."""
    cfg = C2FConfig()
    ph = make_ct_phantom(40 + n_kidneys, n_kidneys=n_kidneys, spacing_mm=(1.5, 1.5, 3.0))
    fg = resample_volume((ph.labels > 0).astype(np.uint8), ph.spacing_mm, cfg.spacing_mm, 0) > 0
    # an 8 mL blob (below the 18.3 mL threshold) far from the kidneys, at the front of the body
    r, a, s = np.indices(fg.shape, sparse=True)
    blob_r_vox = ((8000 * 3 / (4 * np.pi)) ** (1 / 3)) / np.array(cfg.spacing_mm)
    centre = (fg.shape[0] // 2, int(fg.shape[1] * 0.8), fg.shape[2] // 2)
    fg |= ((r - centre[0]) / blob_r_vox[0]) ** 2 + ((a - centre[1]) / blob_r_vox[1]) ** 2 \
        + ((s - centre[2]) / blob_r_vox[2]) ** 2 < 1
    lab, ids = kidney_components(fg, np.prod(cfg.spacing_mm) / 1000, cfg.kidney_threshold_ml)
    assert lab.max() == n_kidneys + 1  # the blob is a component
    assert len(ids) == n_kidneys  # ... but not a kidney
    assert (len(ids) != 2) == (n_kidneys != 2)


def test_square_resize_round_trip_and_crop_paste_inverse():
    rng = np.random.default_rng(0)
    sl = np.zeros((3, 90, 60), np.float32)
    sl[:, 30:60, 20:40] = 1.0
    x = square_resize(sl, 64)
    assert x.shape == (3, 1, 64, 64)
    back = square_restore(x, (90, 60))[:, 0].numpy()
    assert back.shape == sl.shape and np.abs(back - sl).mean() < 0.03  # zero padding did not shift it
    m = square_resize(sl, 64, nearest=True)
    assert set(np.unique(m.numpy())) <= {0.0, 1.0}
    vol = rng.random((50, 40)).astype(np.float32)
    out = np.zeros_like(vol)
    for centre in [(5, 5), (25, 20), (48, 39)]:  # crops over the edges too
        crop = crop_around(vol, centre, (16, 16), 0.0)
        paste_max(out, crop, centre)
        r0, a0 = max(centre[0] - 8, 0), max(centre[1] - 8, 0)
        assert np.array_equal(out[r0:centre[0] + 8, a0:centre[1] + 8], vol[r0:centre[0] + 8, a0:centre[1] + 8])


@pytest.mark.skipif(not KITS19.exists(), reason="../shared/data/kits_masks not present")
def test_tumour_patch_centres_are_a_third_background_kidney_tumour_on_a_real_kits_mask():
    from kidneyseg.io import read_image, to_canonical
    from kidneyseg.training.c2f import C2FVolume, tumour3d_centre

    cfg = C2FConfig()
    lab, _ = to_canonical(read_image(KITS19 / "case_00004" / "segmentation.nii.gz"))
    labels = resample_volume(np.asarray(lab.array, np.uint8), lab.spacing_mm, cfg.spacing_mm, 0)
    idx = np.argwhere(labels > 0)
    box = tuple(slice(max(int(a) - 30, 0), int(b) + 31) for a, b in zip(idx.min(0), idx.max(0)))
    vol = C2FVolume("case_00004", np.zeros(labels.shape, np.float32), labels, [], box)
    rng = np.random.default_rng(1)
    drawn = np.array([labels[tumour3d_centre(vol, int(rng.integers(3)), rng)] for _ in range(1500)])
    shares = np.bincount(drawn, minlength=3) / drawn.size
    assert np.all(np.abs(shares - 1 / 3) < 0.05), shares  # tumour is 1.5 % of the kidneys' box, drawn a third
    assert (labels[box] == 2).mean() < 0.05


def test_config_refuses_sizes_the_u_net_cannot_pool():
    with pytest.raises(InputError, match="multiples of 16"):
        C2FConfig(fine_size=150)
    with pytest.raises(InputError, match="tumour_patch"):
        C2FConfig(tumour_patch=(64, 64, 15))


def test_per_network_iterations_override_the_common_count_and_survive_json():
    cfg = C2FConfig(iterations=600, stage_iterations={"fine": 3000})
    assert cfg.iterations_of("fine") == 3000 and cfg.iterations_of("coarse") == 600
    back = C2FConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.iterations_of("fine") == 3000
    with pytest.raises(InputError, match="stage_iterations"):
        C2FConfig(stage_iterations={"refine": 10})
    with pytest.raises(InputError, match="stage_iterations"):
        C2FConfig(stage_iterations={"fine": 0})


def test_c2f_train_resume_segment_through_the_cli(tmp_path, monkeypatch, capsys):
    from kidneyseg import cli
    from kidneyseg.training import c2f

    data = write_kits_phantoms(tmp_path / "data", [11, 12], fov_mm=(280.0, 200.0, 180.0))
    cfg_file = tmp_path / "c2f.json"
    cfg_file.write_text(json.dumps({**TINY, "iterations": 4, "checkpoint_every": 2}))
    model = tmp_path / "model"
    args = ["train", "c2f-cascade", "--dataset", str(data), "--config", str(cfg_file), "-o", str(model),
            "--device", "cpu", "--quiet", "--num-threads", "2"]

    # a crash in the third iteration of the fine stage: the earlier stages are kept, the fine
    # stage resumes from its checkpoint at iteration 2
    real = c2f.SAMPLERS["fine"]
    calls = {"n": 0}

    def crashing(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real(*a)

    monkeypatch.setitem(c2f.SAMPLERS, "fine", crashing)
    assert cli.main(args) != 0
    assert "killed" in capsys.readouterr().err
    assert (model / "coarse.pt").exists() and (model / "correction.pt").exists() and not (model / "fine.pt").exists()
    assert torch.load(model / "checkpoint_fine.pt", weights_only=False)["iteration"] == 2
    monkeypatch.setitem(c2f.SAMPLERS, "fine", real)
    assert cli.main(args) == 0
    summary = json.loads((model / "training_summary.json").read_text())
    assert set(summary["stages"]) == {"coarse", "correction", "fine", "tumour3d", "tumour2d"}
    assert len(torch.load(model / "fine.pt", weights_only=True)["summary"]["loss_history"]) == 4
    assert not list(model.glob("checkpoint_*.pt"))

    case = data / "case_00011" / "imaging.nii.gz"
    out = tmp_path / "out"
    assert cli.main(["segment", "--pipeline", "c2f-cascade", "--model", str(model), str(case), "-o", str(out),
                     "--device", "cpu", "--quiet"]) == 0
    src, seg = nib.load(str(case)), nib.load(str(out / "imaging_seg.nii.gz"))
    assert seg.shape == src.shape and np.array_equal(seg.affine, src.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
    row = json.loads((out / "volumes.json").read_text())[0]
    for key in ("kidney_right_ml", "kidney_left_ml", "tumor_ml", "abnormal", "coarse_kidney_count", "tumour_source"):
        assert key in row

    # the cascade's branch: a coarse mask with one kidney goes through the correction model,
    # one with both kidneys does not
    pipe = C2FCascadePipeline.load(model, "cpu")
    from kidneyseg.io import read_image, to_canonical

    img = read_image(case, dtype=np.float32)
    ref, _ = to_canonical(read_image(data / "case_00011" / "segmentation.nii.gz"))
    fg = resample_volume((np.asarray(ref.array) > 0).astype(np.uint8), ref.spacing_mm, pipe.config.spacing_mm, 0) > 0
    lab, ids = kidney_components(fg, np.prod(pipe.config.spacing_mm) / 1000, pipe.config.kidney_threshold_ml)
    assert len(ids) == 2
    used = []
    real_correct = pipe.correct
    monkeypatch.setattr(pipe, "correct", lambda v, c: used.append(1) or real_correct(v, c))
    for coarse, abnormal in ((lab == ids[0], True), (fg, False)):
        used.clear()
        monkeypatch.setattr(pipe, "coarse", lambda v, m=coarse: m[: v.shape[0], : v.shape[1], : v.shape[2]])
        res = pipe.segment(img)
        assert res.qc["abnormal"] is abnormal and res.qc["coarse_kidney_count"] == (1 if abnormal else 2)
        assert bool(used) is abnormal
        assert res.mask.shape == img.shape


def test_loading_refuses_incomplete_or_foreign_folders(tmp_path):
    with pytest.raises(InputError, match="no model is shipped"):
        C2FCascadePipeline.load(None)
    (tmp_path / "config.json").write_text(json.dumps({"pipeline": "kits-unet3d"}))
    with pytest.raises(InputError, match="not c2f-cascade"):
        C2FCascadePipeline.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"pipeline": "c2f-cascade", "config": TINY}))
    with pytest.raises(InputError, match="coarse.pt is missing"):
        C2FCascadePipeline.load(tmp_path)
