"""`kidneyseg train` under torchrun: two processes, gloo on CPU, DistributedDataParallel."""

from __future__ import annotations

import json
import subprocess
import sys

import torch


def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path, nnunet_dataset):
    root = nnunet_dataset
    cfg = {"channels": [4, 8, 16], "num_res_units": 0, "patch_size": [32, 32], "batch_size": 2, "iterations": 3,
           "checkpoint_every": 3, "num_threads": 1, "target_spacing_mm": 1.5}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))

    def run(out, nproc):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
               "kidneyseg.cli", "train", "--dataset", str(root), "--layout", "nnunet", "-o", str(out),
               "--config", str(tmp_path / "cfg.json"), "--device", "cpu", "--quiet"]
        r = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((out / "training_summary.json").read_text()), torch.load(out / "model.pt", weights_only=True)

    two, w2 = run(tmp_path / "ddp", 2)
    assert two["world_size"] == 2 and two["ranks_in_sync"] is True  # both ranks hold rank 0's weights
    one, w1 = run(tmp_path / "single", 1)
    assert one["world_size"] == 1
    # two processes average the gradients of twice the patches: the weights differ from one process's
    assert w1.keys() == w2.keys() and any(not torch.equal(w1[k], w2[k]) for k in w1)
