"""recipes/kits.sh, the KiTS recipe the docs give, run end to end on synthetic cases in the
KiTS layout: plan, train on the other cases, segment the held-out ones, score them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kidneyseg.datasets.ct_phantom import write_kits_phantoms

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "kits.sh"
C2F_TINY = ["--spacing-mm", "2", "2", "4", "--coarse-size", "64", "--correction-size", "96", "32", "--fine-size", "64",
            "--channels-2d", "8", "16", "32", "--channels-3d", "8", "16", "16", "--tumour-patch", "32", "32", "8",
            "--tumour-box-margin", "8", "--batch-2d", "4", "--batch-3d", "2", "--res-units", "0"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="the recipe is a bash script")
@pytest.mark.parametrize("method, flags", [("kits-unet3d", ["--sw-batch-size", "64"]), ("c2f-cascade", C2F_TINY)])
def test_kits_recipe_holds_out_cases_and_scores_only_them(tmp_path, method, flags):
    data = write_kits_phantoms(tmp_path / "kits", [0, 1, 2], spacings=((3.0, 3.0, 4.0),))
    out = tmp_path / "run"
    env = dict(os.environ, KIDNEYSEG=str(Path(sys.executable).parent / "kidneyseg"), MEMORY_GB="1.0", HOLDOUT="34")
    proc = subprocess.run(["bash", str(RECIPE), method, str(data), str(out), "--iterations", "2", "--device", "cpu",
                           "--quiet", *flags], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    held = (out / "held_out.txt").read_text().split()
    assert held == ["case_00002"]  # the last 34 % by id
    trained = json.loads((out / "model" / "config.json").read_text())["cases"]
    assert sorted(trained) == ["case_00000", "case_00001"]
    scores = json.loads((out / "scores" / "metrics.json").read_text())
    assert {r["case"] for r in scores["cases"]} == {"case_00002"}
    assert sorted(scores["unmatched_ref"]) == ["case_00000", "case_00001"]
    assert "with a reference only" not in proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="the recipe is a bash script")
def test_open_kidney_recipe_trains_on_the_train_split_and_scores_the_test_split(tmp_path):
    """recipes/open_kidney.sh on stand-in images (speckled capsule masks, since the real
    images are released only after registration) in the Open Kidney layout."""
    import numpy as np
    from PIL import Image as PILImage

    from kidneyseg.datasets.kidneyus import KidneyUSDataset

    labels = Path(__file__).resolve().parents[3] / "shared" / "data" / "kidneyus_labels"
    if not labels.is_dir():
        pytest.skip(f"{labels}: the Open Kidney annotations are not beside the project")
    dataset = KidneyUSDataset.load(labels)
    split = dataset.split(0)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for n in split["train"][:4] + split["validation"][:1] + split["test"][:2]:
        cap = dataset.cases[n].capsule("sonographer1")
        img = np.where(cap, 90, 160) * rng.rayleigh(1.0, cap.shape) / 1.25
        PILImage.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(images / n)
    out = tmp_path / "run"
    env = dict(os.environ, KIDNEYSEG=str(Path(sys.executable).parent / "kidneyseg"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(RECIPE.parent / "open_kidney.sh"), str(labels), str(images), str(out),
                           "--members", "linknet_resnet18", "--fusion-epochs", "0", "--epochs", "1", "--image-size",
                           "64", "64", "--batch-size", "4", "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tested = {Path(n).stem for n in split["test"][:2]}
    summary = json.loads((out / "model" / "training_summary.json").read_text())
    assert summary["train_images"] == 4
    for k in (1, 2):
        scores = json.loads((out / f"scores_sonographer{k}" / "metrics.json").read_text())
        assert {r["case"] for r in scores["cases"]} == tested  # only the test frames are scored
    assert "test split: 2 of" in proc.stderr
