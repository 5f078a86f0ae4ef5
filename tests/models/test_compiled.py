"""The traced-network cache (kidneyseg.models.compiled): same logits, no MONAI import, safe fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from kidneyseg.models.store import default_model_dir, load_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KIDNEYSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KIDNEYSEG_NETWORK_CACHE", raising=False)
    return tmp_path / "cache" / "networks"


def test_second_load_reads_the_traced_copy_with_the_same_logits(cache):
    first = load_model(None, "cpu")
    assert not isinstance(first.network, torch.jit.ScriptModule)
    files = list(cache.glob("*.ts"))
    assert len(files) == 1
    second = load_model(None, "cpu")
    assert isinstance(second.network, torch.jit.ScriptModule)
    c = first.config.context_slices * 2 + 1
    with torch.inference_mode():
        for shape in ((3, c, 160, 208), (1, c, 272, 96)):  # sizes other than the traced one
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            torch.testing.assert_close(second.network(x), first.network(x), atol=1e-5, rtol=0)


def test_cache_off_and_damaged_file_fall_back_to_monai(cache, monkeypatch):
    monkeypatch.setenv("KIDNEYSEG_NETWORK_CACHE", "0")
    assert not isinstance(load_model(None, "cpu").network, torch.jit.ScriptModule)
    assert not cache.exists()
    monkeypatch.delenv("KIDNEYSEG_NETWORK_CACHE")
    load_model(None, "cpu")
    (path,) = cache.glob("*.ts")
    path.write_bytes(b"not a TorchScript archive")
    bundle = load_model(None, "cpu")  # unreadable: built from MONAI again, and the file rewritten
    assert not isinstance(bundle.network, torch.jit.ScriptModule)
    assert isinstance(load_model(None, "cpu").network, torch.jit.ScriptModule)
    assert not list(cache.glob("*.tmp"))


def test_changed_weights_get_their_own_entry(cache, tmp_path):
    import shutil

    folder = shutil.copytree(default_model_dir(), tmp_path / "model")
    load_model(folder, "cpu")
    state = torch.load(folder / "model.pt")
    first = next(iter(state))
    state[first] = state[first] + 1.0
    torch.save(state, folder / "model.pt")
    bundle = load_model(folder, "cpu")
    assert not isinstance(bundle.network, torch.jit.ScriptModule)  # not the stale copy
    assert len(list(cache.glob("*.ts"))) == 2


def test_one_case_command_with_a_warm_cache_does_not_import_monai(cache, tmp_path):
    """A fresh process (what a user runs): with the cache written, segment never imports MONAI."""
    load_model(None, "cpu")
    # mr-auto gives the bundled axial abdomen to the multiprotocol pair: write its traced copy too
    load_model(default_model_dir("mr_multiprotocol_kidney"), "cpu", "mr-multiprotocol-unet")
    code = ("import sys; from kidneyseg.cli import main\n"
            "try:\n    main(['segment', sys.argv[1], '-o', sys.argv[2]])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('monai' in sys.modules)")
    from kidneyseg.api import example_dir

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(example_dir() / "image_39.nii.gz"), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "out" / "image_39_seg.nii.gz").is_file()


def test_a_softmax_ensemble_is_traced_as_one_network(cache):
    """The shipped multiprotocol model is a two-seed ensemble: its second load reads one traced
    file holding both networks and their softmax average, with the same output."""
    from kidneyseg.models.store import SoftmaxEnsemble

    folder = default_model_dir("mr_multiprotocol_kidney")
    first = load_model(folder, "cpu", "mr-multiprotocol-unet")
    assert isinstance(first.network, SoftmaxEnsemble) and len(first.network.members) == 2
    second = load_model(folder, "cpu", "mr-multiprotocol-unet")
    assert isinstance(second.network, torch.jit.ScriptModule) and len(list(cache.glob("*.ts"))) == 1
    with torch.inference_mode():
        x = torch.randn(2, 1, 96, 128, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(second.network(x), first.network(x), atol=1e-5, rtol=0)
