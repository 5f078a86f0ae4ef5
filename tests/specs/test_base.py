"""One generic serialisation for every config saved as JSON (issue 23: the hand-written
to_dict / from_dict / replace methods went)."""

from __future__ import annotations

import json

import pytest

from kidneyseg.inference.settings import InferenceConfig
from kidneyseg.localize import ROIConfig
from kidneyseg.localize.em import EMConfig
from kidneyseg.preprocess.super_resolution import SRConfig
from kidneyseg.specs.c2f import C2FConfig
from kidneyseg.specs.em_unet import EMUNetConfig
from kidneyseg.specs.kits import KitsConfig
from kidneyseg.specs.mr_unet import TrainConfig
from kidneyseg.specs.unsupervised import ClusterConfig, UnsupervisedConfig, paper_config
from kidneyseg.specs.us import USTrainConfig

CONFIGS = [
    TrainConfig(recipe="multiplane", context_slices=0, extra_datasets=[["a", "ukat"]], exclude_cases=["3"]),
    TrainConfig(spatial_dims=3, patch_size=(64, 64, 16), channels=(8, 16, 32)),
    USTrainConfig(members=("linknet_resnet18",), encoder_weights={"linknet_resnet18": "w.pth"}, image_size=(64, 96)),
    EMUNetConfig(em=EMConfig(class_ranks=(7, 9)), em_class_choice="manual", super_resolution=5,
                 sr=SRConfig(factor=5), histogram_references=("a.nii.gz",)),
    paper_config(),
    UnsupervisedConfig(roi=ROIConfig(expected_kidneys=1, lateral_range_mm=(10.0, 90.0)),
                       cluster=ClusterConfig(channels=30)),
    InferenceConfig(tta_shifts_px=((0, 0), (8, 8)), kidney_threshold=0.3, validated_volume_ml=(100.0, 300.0)),
    KitsConfig(), C2FConfig(stage_iterations={"fine": 30}),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_config_reads_back_from_its_json_equal(config):
    """Through JSON (tuples become lists, int keys strings, nested configs dicts) and back."""
    text = json.dumps(config.to_dict())
    again = type(config).from_dict(json.loads(text))
    assert again == config
    assert json.dumps(again.to_dict()) == text


def test_nested_configs_and_tuples_are_restored_not_left_as_dicts_and_lists():
    cfg = EMUNetConfig.from_dict(json.loads(json.dumps(EMUNetConfig(em=EMConfig(class_ranks=(5, 6))).to_dict())))
    assert isinstance(cfg.em, EMConfig) and cfg.em.class_ranks == (5, 6) and isinstance(cfg.sr, SRConfig)
    assert isinstance(cfg.input_size, tuple)
    inf = InferenceConfig.from_dict({"tta_shifts_px": [[0, 0], [4, 4]], "validated_volume_ml": [1, 2]})
    assert inf.tta_shifts_px == ((0, 0), (4, 4)) and inf.validated_volume_ml == (1, 2)
    assert EMUNetConfig().to_dict()["pipeline"] == "em-unet3d"  # config.json names its pipeline


def test_unknown_keys_strict_where_a_person_writes_the_json():
    with pytest.raises(TypeError, match="iterationz"):
        TrainConfig.from_dict({"iterationz": 3})
    with pytest.raises(TypeError, match="threshold"):
        InferenceConfig.from_dict({"threshold": 0.3})
    # model-folder configs written by a newer kidneyseg still load
    assert USTrainConfig.from_dict({"epochs": 3, "added_later": 1}).epochs == 3


def test_a_checkpoint_written_with_lists_and_string_keys_still_resumes(tmp_path):
    import torch

    from kidneyseg.training.checkpoint import read_checkpoint, save_checkpoint

    cfg = TrainConfig(patch_size=(96, 96))
    old = json.loads(json.dumps(cfg.to_dict()))  # how an earlier version stored it
    save_checkpoint(tmp_path / "c.pt", {"config": old, "model": {"w": torch.zeros(1)}, "iteration": 3})
    assert read_checkpoint(tmp_path / "c.pt", cfg.to_dict())["iteration"] == 3
    with pytest.raises(Exception, match="another config"):
        read_checkpoint(tmp_path / "c.pt", cfg.replace(iterations=5).to_dict())
