"""kidneyseg.models.folder.ModelFolder: the one reader of model folders, used by every pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from kidneyseg.errors import InputError
from kidneyseg.models.folder import ModelFolder
from kidneyseg.pipelines import PIPELINES, get_pipeline

TRAINABLE = [n for n, spec in PIPELINES.items() if spec.trainable]  # mr-auto takes no model folder (tests/pipelines/test_mr_auto.py)


def _folder(tmp_path, config, weights=("model.pt",)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in weights:
        torch.save({"w": torch.zeros(2)}, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_pipeline_refuses_another_pipelines_folder(tmp_path, name):
    other = "kits-unet3d" if name != "kits-unet3d" else "us-ensemble"
    stages = ("coarse.pt", "abnormal.pt", "fine.pt", "tumour3d.pt", "tumour2d.pt")
    folder = _folder(tmp_path / "m", {"pipeline": other}, ("model.pt",) + stages)
    with pytest.raises(InputError, match=f"a '{other}' model, not {name}"):
        get_pipeline(name, model=str(folder), device="cpu")


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_pipeline_names_what_is_missing(tmp_path, name):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"not a kidneyseg model folder for {name}.*missing config.json"):
        get_pipeline(name, model=str(tmp_path / "empty"), device="cpu")


def test_unreadable_and_misfitting_weights_are_one_line_errors(tmp_path):
    folder = _folder(tmp_path, {"pipeline": "x"})
    opened = ModelFolder.open(folder, "x")
    (folder / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt: unreadable weights"):
        opened.state("bad.pt")
    with pytest.raises(InputError, match="model.pt: weights do not fit config.json"):
        opened.load_weights(torch.nn.Linear(3, 3))
    with pytest.raises(InputError, match="absent.pt is missing"):
        opened.state("absent.pt")


def test_weights_that_would_run_code_are_refused(tmp_path):
    folder = _folder(tmp_path, {"pipeline": "x"}, ())
    torch.save({"w": torch.zeros(1), "code": print}, folder / "model.pt")  # a pickled callable: not weights_only
    with pytest.raises(InputError, match="unreadable weights"):
        ModelFolder.open(folder, "x").state()


def test_config_errors_name_the_file(tmp_path):
    folder = _folder(tmp_path, {"pipeline": "x"})
    (folder / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: unreadable model config"):
        ModelFolder.open(folder, "x")
    (folder / "config.json").write_text(json.dumps({"pipeline": "x"}))
    with pytest.raises(InputError, match="invalid x model config"):
        ModelFolder.open(folder, "x").config(lambda raw: raw["missing"])
