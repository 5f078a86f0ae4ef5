"""Training pieces: config, folds, label-safe mirroring, foreground oversampling, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kidneyseg.datasets import chaos_cases, nnunet_cases
from kidneyseg.errors import InputError
from kidneyseg.labels import MR_KIDNEYS
from kidneyseg.specs.mr_unet import TrainConfig
from kidneyseg.training.data import flip_left_right, foreground_slots, load_volume, sample_batch
from kidneyseg.training.trainer import select_cases, split_folds, train

from ..conftest import CHAOS, needs_chaos

TINY = dict(channels=(4, 8, 16), num_res_units=0, patch_size=(32, 32), batch_size=3, iterations=4,
            checkpoint_every=2, num_threads=1, device="cpu", folds=2, context_slices=1)


def test_config_json_round_trip_and_validation():
    cfg = TrainConfig(dataset="x", exclude_cases=("39",), fold=1)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="patch_size"):
        TrainConfig(patch_size=(100, 100))
    with pytest.raises(ValueError, match="fold"):
        TrainConfig(fold=5, folds=5)
    with pytest.raises(TypeError):
        TrainConfig.from_dict({"not_a_field": 1})


def test_split_folds_by_patient_disjoint_and_complete():
    ids = [str(i) for i in range(14)]
    folds = split_folds(ids, 5, seed=0)
    flat = [c for f in folds for c in f]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    assert [len(f) for f in folds] == [3, 3, 3, 3, 2]
    assert split_folds(ids, 5, seed=0) == folds and split_folds(ids, 5, seed=1) != folds


@needs_chaos
def test_split_seed_keeps_the_folds_when_the_training_seed_changes():
    base = TrainConfig(dataset=str(CHAOS), exclude_cases=("39",), fold=2)
    held = lambda cfg: sorted(c.case_id for c in select_cases(cfg)[1])
    assert held(base.replace(seed=1, split_seed=0)) == held(base)
    assert held(base.replace(seed=1)) != held(base)  # None: the split follows the training seed
    assert TrainConfig.from_dict(base.replace(seed=1, split_seed=0).to_dict()).fold_seed == 0


def test_flip_left_right_swaps_kidney_labels():
    image = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    label = np.zeros((1, 4, 3), np.uint8)
    label[0, 0, :] = 1  # right kidney at low x ... after mirroring it is the left kidney
    label[0, 3, :] = 2
    img2, lab2 = flip_left_right(image, label, MR_KIDNEYS)
    assert np.array_equal(img2, image[:, ::-1])
    assert (lab2[0, 3] == 2).all() and (lab2[0, 0] == 1).all()  # mirrored positions, swapped names
    assert np.array_equal(lab2 == 2, (label == 1)[:, ::-1])
    other = {1: "liver", 2: "kidney_right", 3: "kidney_left"}
    l3 = np.array([[[1, 2, 3]]], np.uint8).reshape(1, 3, 1)
    _, out = flip_left_right(np.zeros((1, 3, 1), np.float32), l3, other)
    assert out.ravel().tolist() == [2, 3, 1]  # reversed order, right<->left swapped, liver kept


def test_nnunet_layout_reader_and_foreground_oversampling(nnunet_dataset):
    cases = nnunet_cases(nnunet_dataset, MR_KIDNEYS)
    assert [c.case_id for c in cases] == ["k_000", "k_001", "k_002", "k_003"]
    cfg = TrainConfig(dataset=str(nnunet_dataset), layout="nnunet", **{**TINY, "batch_size": 30},
                      foreground_fraction=1.0, target_spacing_mm=1.5)
    vol = load_volume(cases[0], cfg)
    assert vol.image.dtype == np.float32 and abs(float(vol.image.mean())) < 0.5
    _, y = sample_batch([vol], cfg, np.random.default_rng(0), None)
    assert all(y[b].any() for b in range(30))  # every patch holds kidney
    with pytest.raises(InputError, match="dataset.json"):
        nnunet_cases(nnunet_dataset / "imagesTr", MR_KIDNEYS)


def test_foreground_oversampling_survives_a_batch_of_one():
    rng = np.random.default_rng(0)
    # nnU-Net's rule: the last round(B * f) patches; no draw from the generator
    assert foreground_slots(12, 0.33, rng).tolist() == [False] * 8 + [True] * 4
    assert foreground_slots(2, 0.33, rng).tolist() == [False, True]
    state = rng.bit_generator.state
    foreground_slots(3, 0.34, rng)
    assert rng.bit_generator.state == state  # larger batches sample exactly as before the change
    # batch 1: round(0.33) is 0, which silently turned the oversampling off; now each patch
    # is centred on the foreground with probability 0.33
    share = np.mean([foreground_slots(1, 0.33, rng)[0] for _ in range(4000)])
    assert 0.30 < share < 0.36
    assert not any(foreground_slots(1, 0.0, rng)[0] for _ in range(100))


def _train_killed_at_batch(cfg, out, monkeypatch, kill_at: int) -> None:
    """Run ``train`` and raise KeyboardInterrupt when batch number ``kill_at`` is drawn."""
    import kidneyseg.training.trainer as trainer

    real = trainer.sample_batch
    calls = {"n": 0}

    def killed(*a, **k):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer, "sample_batch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, progress=False)
    monkeypatch.setattr(trainer, "sample_batch", real)


def test_training_resumes_after_kill_to_identical_weights(nnunet_dataset, tmp_path, monkeypatch):
    cfg = TrainConfig(dataset=str(nnunet_dataset), layout="nnunet", target_spacing_mm=1.5, **TINY)
    full = train(cfg, tmp_path / "full", progress=False)
    _train_killed_at_batch(cfg, tmp_path / "resumed", monkeypatch, kill_at=4)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    ck = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert ck["format"] == 1 and ck["iteration"] == 2 and {"config", "model", "optimizer", "seconds"} <= set(ck)
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (resumed / "checkpoint.pt").exists()
    saved = json.loads((resumed / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == cfg


def test_checkpoint_with_other_config_is_refused(nnunet_dataset, tmp_path, monkeypatch):
    cfg = TrainConfig(dataset=str(nnunet_dataset), layout="nnunet", target_spacing_mm=1.5, **TINY)
    _train_killed_at_batch(cfg, tmp_path / "m", monkeypatch, kill_at=3)
    with pytest.raises(ValueError, match="another config"):
        train(cfg.replace(seed=5), tmp_path / "m", progress=False)


def test_compiled_training_saves_the_plain_network_and_may_resume_an_eager_run(nnunet_dataset, tmp_path, monkeypatch):
    """``TrainConfig.compile``: the steps run through ``torch.compile``; the saved weights carry
    the plain network's names, and a run may switch it on when it resumes (a runtime field,
    like ``num_threads``), reaching the eager run's weights to float tolerance."""
    cfg = TrainConfig(dataset=str(nnunet_dataset), layout="nnunet", target_spacing_mm=1.5, **TINY)
    full = train(cfg, tmp_path / "full", progress=False)
    _train_killed_at_batch(cfg, tmp_path / "resumed", monkeypatch, kill_at=3)
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **k: compiled.append(m) or real_compile(m, **k))
    resumed = train(cfg.replace(compile=True), tmp_path / "resumed", progress=False)
    assert len(compiled) == 1
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    # a conv bias followed by instance norm has no gradient in exact arithmetic, so AdamW moves it
    # by float noise that differs between the two; the networks' outputs are what must agree
    from kidneyseg.models.store import build_network

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    nets = [build_network(cfg).eval() for _ in range(2)]
    for net, state in zip(nets, (a, b)):
        net.load_state_dict(state)
    with torch.inference_mode():
        ya, yb = (net(x) for net in nets)
    assert torch.allclose(ya, yb, atol=1e-3) and not torch.allclose(ya, torch.zeros_like(ya), atol=1e-3)


def test_weight_averaging_saves_the_mean_of_the_chosen_iterates_and_resumes(nnunet_dataset, tmp_path, monkeypatch):
    """``weight_average_from`` (SWA): with 4 iterations, from 0.25 and every 2nd step, the saved
    model is the mean of the weights after steps 2 and 4, across a kill and resume; the last
    iterate, saved beside it, is the plain run's model (averaging does not steer training)."""
    from kidneyseg.training.trainer import LAST_ITERATE

    cfg = TrainConfig(dataset=str(nnunet_dataset), layout="nnunet", target_spacing_mm=1.5, **TINY)
    plain = torch.load(train(cfg, tmp_path / "plain", progress=False) / "model.pt", weights_only=True)
    swa = cfg.replace(weight_average_from=0.25, weight_average_every=2)
    _train_killed_at_batch(swa, tmp_path / "swa", monkeypatch, kill_at=3)
    ck = torch.load(tmp_path / "swa" / "checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 2 and int(ck["averaged_model"]["n_averaged"]) == 1
    w2 = ck["model"]
    out = train(swa, tmp_path / "swa", progress=False)
    last = torch.load(out / LAST_ITERATE / "model.pt", weights_only=True)
    mean = torch.load(out / "model.pt", weights_only=True)
    assert mean.keys() == plain.keys() == last.keys()
    assert all(torch.equal(last[k], plain[k]) for k in plain)
    floats = [k for k in mean if mean[k].is_floating_point()]
    assert all(torch.allclose(mean[k], (w2[k] + last[k]) / 2, atol=1e-6) for k in floats)
    assert any(not torch.allclose(mean[k], last[k]) for k in floats)
    assert json.loads((out / "training_summary.json").read_text())["weights_averaged"] == 2
    with pytest.raises(ValueError, match="weight_average_from"):
        TrainConfig(weight_average_from=1.0)
    with pytest.raises(ValueError, match="no step after"):
        cfg.replace(weight_average_from=0.5, weight_average_every=8)


@needs_chaos
def test_chaos_reader_maps_labels_by_name():
    cases = chaos_cases(CHAOS, MR_KIDNEYS)
    assert len(cases) == 15 and cases[0].case_id == "1"
    assert cases[0].label_values == {2: 1, 3: 2}  # CHAOS 2 right kidney -> 1, 3 left kidney -> 2


def test_3d_unet_trains_and_segments_on_input_grid(nnunet_dataset, tmp_path):
    from kidneyseg.io import read_image
    from kidneyseg.pipelines.mr_t2 import MRKidneyPipeline

    cfg = TrainConfig(dataset=str(nnunet_dataset), layout="nnunet", target_spacing_mm=1.5,
                      **{**TINY, "spatial_dims": 3, "patch_size": (32, 32, 8), "z_pool_levels": 1})
    assert cfg.strides == [(2, 2, 1), (2, 2, 2)]
    out = train(cfg, tmp_path / "m3d", progress=False)
    pipe = MRKidneyPipeline.load(str(out), "cpu")
    image = read_image(next((nnunet_dataset / "imagesTr").glob("*.nii.gz")), dtype=np.float32)
    result = pipe.segment(image)
    assert result.mask.shape == image.shape and np.array_equal(result.mask.affine, image.affine)
    with pytest.raises(ValueError, match="patch_size"):
        cfg.replace(patch_size=(32, 32, 7))


@needs_chaos
def test_chaos_auxiliary_organs_become_extra_classes():
    cfg = TrainConfig(dataset=str(CHAOS))
    assert cfg.network_classes == 4 and cfg.kidney_classes == 1
    case = chaos_cases(CHAOS, MR_KIDNEYS)[-1]
    vol = load_volume(case, cfg)
    assert set(np.unique(vol.label)) == {0, 1, 2, 3}  # background, kidney, liver, spleen
    assert (vol.label[tuple(vol.fg.T)] == 1).all()  # foreground oversampling only targets kidney
