"""Model folders that average the softmax of several weight files (``ensemble.json``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kidneyseg.errors import InputError
from kidneyseg.inference import predict_probabilities, prepare
from kidneyseg.io import Image
from kidneyseg.models.store import SoftmaxEnsemble, build_network, load_model, save_model
from kidneyseg.training.ensemble import make_ensemble
from kidneyseg.specs.mr_unet import TrainConfig

from ..conftest import ellipsoid


def _member(folder, seed: int, **changes):
    cfg = TrainConfig(channels=(4, 8, 16), patch_size=(32, 32), seed=seed, body_clip_ratio=None, **changes)
    torch.manual_seed(seed)
    save_model(build_network(cfg), cfg, folder)
    return folder


def _image():
    shape = (40, 36, 6)
    arr = ellipsoid(shape, (1.25, 1.25, 5.0), (25, 22, 15), (12, 10, 8)).astype(np.float32) * 100
    arr += np.random.default_rng(0).normal(50, 5, shape).astype(np.float32)
    return Image(arr, np.diag([1.25, 1.25, 5.0, 1.0]))


def test_softmax_ensemble_is_the_mean_of_the_members_softmax():
    torch.manual_seed(0)
    nets = [torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)]
    x = torch.randn(2, 3, 8, 8)
    got = torch.softmax(SoftmaxEnsemble(nets)(x), 1)
    want = (torch.softmax(nets[0](x), 1) + torch.softmax(nets[1](x), 1)) / 2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        SoftmaxEnsemble(nets[:1])


def _is_ensemble(network: torch.nn.Module) -> bool:
    """A SoftmaxEnsemble, or its traced copy from the network cache."""
    return isinstance(network, SoftmaxEnsemble) or getattr(network, "original_name", "") == "SoftmaxEnsemble"


def test_ensemble_folder_predicts_the_mean_of_its_members(tmp_path):
    a, b = _member(tmp_path / "a", 0), _member(tmp_path / "b", 1)
    ens = make_ensemble([a, b], tmp_path / "ens")
    meta = json.loads((ens / "ensemble.json").read_text())
    assert [m["seed"] for m in meta["members"]] == [0, 1] and [m["weights"] for m in meta["members"]] == ["model.pt", "model_1.pt"]
    prep = prepare(_image(), 1.25)
    probs = {}
    for name, folder in (("a", a), ("b", b), ("ens", ens)):
        m = load_model(folder, "cpu")
        probs[name] = predict_probabilities(m.network, prep, m.config.context_slices, m.device, levels=3)
    again = load_model(ens, "cpu")  # a later load reads the whole ensemble's traced copy (models.compiled)
    assert _is_ensemble(again.network)
    assert (probs["a"] - probs["b"]).abs().max() > 1e-3  # two different members
    torch.testing.assert_close(probs["ens"], (probs["a"] + probs["b"]) / 2, rtol=1e-4, atol=1e-5)
    traced = predict_probabilities(again.network, prep, again.config.context_slices, again.device, levels=3)
    torch.testing.assert_close(traced, (probs["a"] + probs["b"]) / 2, rtol=1e-4, atol=1e-5)


def test_ensemble_refuses_members_that_differ_beyond_the_seed(tmp_path):
    a, b = _member(tmp_path / "a", 0), _member(tmp_path / "b", 1, learning_rate=1e-3)
    with pytest.raises(InputError, match="learning_rate"):
        make_ensemble([a, b], tmp_path / "ens")
    assert not (tmp_path / "ens").exists() and not (tmp_path / "ens.partial").exists()
    with pytest.raises(InputError, match="two or more"):
        make_ensemble([a], tmp_path / "ens")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        make_ensemble([a, _member(tmp_path / "c", 2)], tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep"
    # how a member ran (threads, device, torch.compile) is not what it is: such members combine
    fast = _member(tmp_path / "d", 3, compile=True, num_threads=2)
    assert (make_ensemble([a, fast], tmp_path / "ens_ok") / "ensemble.json").is_file()


@pytest.mark.parametrize("content, match", [
    ('{"members": [{"weights": "model.pt"}, {"weights": "missing.pt"}]}', "missing.pt"),
    ('{"members": [{"weights": "model.pt"}, {"weights": "../a/model.pt"}]}', "not a weight file"),
    ('{"members": [{"weights": "model.pt"}]}', "two or more"),
    ('{"members": 3}', "invalid ensemble"),
    ('not json', "invalid ensemble"),
])
def test_bad_ensemble_json_is_refused_naming_the_file(tmp_path, content, match):
    folder = _member(tmp_path / "a", 0)
    (folder / "ensemble.json").write_text(content)
    with pytest.raises(InputError, match=match) as err:
        load_model(folder, "cpu")
    assert "ensemble.json" in str(err.value)


def test_ensemble_command_writes_a_loadable_folder_and_refuses_bad_members(tmp_path):
    from ..cli.test_cli import run

    a, b = _member(tmp_path / "a", 0), _member(tmp_path / "b", 1)
    ok = run("ensemble", str(a), str(b), "-o", str(tmp_path / "ens"))
    assert ok.returncode == 0, ok.stderr
    assert _is_ensemble(load_model(tmp_path / "ens", "cpu").network)
    bad = run("ensemble", str(a), str(tmp_path / "nothing"), "-o", str(tmp_path / "ens2"))
    assert bad.returncode == 2 and "nothing" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "ens2").exists()


def test_fold_ensemble_of_a_cross_validation(tmp_path):
    """nnU-Net's ensemble of a cross-validation's folds: members differing in the fold are
    accepted; a member differing in anything else still is not."""
    folds = [_member(tmp_path / f"fold_{k}", 0, fold=k, folds=3) for k in range(3)]
    ens = make_ensemble(folds, tmp_path / "ens")
    assert len(json.loads((ens / "ensemble.json").read_text())["members"]) == 3
    assert isinstance(load_model(ens, "cpu").network, SoftmaxEnsemble)
    other = _member(tmp_path / "other", 0, fold=1, folds=5)
    with pytest.raises(InputError, match="folds"):
        make_ensemble([folds[0], other], tmp_path / "ens2")
