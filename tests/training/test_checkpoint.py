"""The trainers' one checkpoint format (kidneyseg.training.checkpoint): a restored run continues with the
same weights, optimiser moments and random streams as the run that wrote it."""

from __future__ import annotations

import numpy as np
import torch

from kidneyseg.training.checkpoint import restore_training_state, save_training_state


def _setup(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    return net, opt, np.random.default_rng(seed)


def _step(net, opt, rng):
    x = torch.from_numpy(rng.normal(size=(8, 4)).astype(np.float32)) + torch.randn(8, 4)
    loss = net(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def test_restored_run_continues_bit_for_bit(tmp_path):
    net, opt, rng = _setup(0)
    for _ in range(3):
        _step(net, opt, rng)
    save_training_state(tmp_path / "ck.pt", net, opt, rng, 3, [1.0, 0.5, 0.25], 12.5)
    expected = [_step(net, opt, rng) for _ in range(2)]

    other, other_opt, other_rng = _setup(1)  # different weights and streams until restored
    it, history, seconds = restore_training_state(tmp_path / "ck.pt", other, other_opt, other_rng)
    assert (it, history, seconds) == (3, [1.0, 0.5, 0.25], 12.5)
    assert [_step(other, other_opt, other_rng) for _ in range(2)] == expected
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    assert not list(tmp_path.glob("*.tmp*"))


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    net, opt, rng = _setup(0)
    before = [p.clone() for p in net.parameters()]
    assert restore_training_state(tmp_path / "missing.pt", net, opt, rng) == (0, [], 0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


class _RunsCode:
    """Unpickling this object would call ``Path.touch`` on the given file: code in a checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    """Every trainer resumes through load_checkpoint (torch.load with weights_only=True): a
    checkpoint that would run code when unpickled is refused with the file named, and the
    code does not run."""
    import pytest

    from kidneyseg.errors import InputError
    from kidneyseg.training.checkpoint import load_checkpoint

    marker = tmp_path / "code_ran"
    net, opt, rng = _setup(0)
    save_training_state(tmp_path / "ck.pt", net, opt, rng, 1, [1.0], 1.0)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    ck["history"] = _RunsCode(marker)
    torch.save(ck, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt: checkpoint holds more than tensors"):
        restore_training_state(tmp_path / "evil.pt", net, opt, rng)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoints_written_before_the_one_format_are_read_under_its_names(tmp_path):
    """MR, ultrasound and em-unet3d checkpoints once used ``network``, ``optimiser``,
    ``train_seconds`` and ``numpy_rng``; a run interrupted then still resumes."""
    from kidneyseg.training.checkpoint import FORMAT, read_checkpoint, save_checkpoint

    net, opt, rng = _setup(0)
    old = {"config": {"a": 1}, "network": net.state_dict(), "optimiser": opt.state_dict(), "train_seconds": 3.5,
           "numpy_rng": rng.bit_generator.state, "iteration": 7}
    torch.save(old, tmp_path / "old.pt")
    ck = read_checkpoint(tmp_path / "old.pt", {"a": 1})
    assert {"model", "optimizer", "seconds", "rng", "iteration"} <= set(ck) and ck["seconds"] == 3.5
    assert not {"network", "optimiser", "train_seconds", "numpy_rng"} & set(ck)
    save_checkpoint(tmp_path / "new.pt", {"config": {"a": 1}, "model": net.state_dict(), "iteration": 7})
    assert torch.load(tmp_path / "new.pt", weights_only=True)["format"] == FORMAT
    assert read_checkpoint(tmp_path / "absent.pt") is None


def test_a_checkpoint_of_another_config_is_refused_with_one_line(tmp_path):
    import pytest

    from kidneyseg.errors import InputError
    from kidneyseg.training.checkpoint import read_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "ck.pt", {"config": {"seed": 0, "num_threads": 1, "device": "cpu"}, "iteration": 1})
    with pytest.raises(InputError, match="ck.pt: checkpoint was made with another config"):
        read_checkpoint(tmp_path / "ck.pt", {"seed": 1, "num_threads": 1, "device": "cpu"})
    # how the run executes is not what it trains: more threads or another device may resume it
    assert read_checkpoint(tmp_path / "ck.pt", {"seed": 0, "num_threads": 2, "device": "cuda"})["iteration"] == 1
