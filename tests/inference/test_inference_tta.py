"""Test-time augmentation, the kidney-probability threshold and a model folder's inference.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from kidneyseg.errors import InputError
from kidneyseg.inference import (InferenceConfig, decide_labels, predict_probabilities,
                                 prepare, read_inference_config, write_inference_config)
from kidneyseg.inference import TestTimeAugmentation as TTA  # aliased: pytest would collect Test*
from kidneyseg.io import Image
from kidneyseg.models.store import default_model_dir, load_model

from ..conftest import ellipsoid


class PointwiseNet(torch.nn.Module):
    """A 1 x 1 convolution: exactly translation- and mirror-equivariant, so every TTA pass,
    once aligned back, must give the plain pass's probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        torch.manual_seed(0)
        torch.nn.init.normal_(self.conv.weight)

    def forward(self, x):
        return self.conv(x)


class MeanPoolNet(torch.nn.Module):
    """Not equivariant below its 16-pixel grid (2 x 2 pooling four times), like the U-Net."""

    def forward(self, x):
        y = torch.nn.functional.avg_pool2d(x, 16)
        y = torch.nn.functional.interpolate(y, scale_factor=16, mode="nearest")
        return torch.cat([y[:, :1], -y[:, :1], y[:, 1:2], y[:, 2:3]], 1)


def _prepared(shape=(37, 29, 5)):
    rng = np.random.default_rng(1)
    arr = rng.normal(size=shape).astype(np.float32) + ellipsoid(shape, (2.0, 2.0, 5.0), (36, 28, 10), (16, 12, 10)).astype(np.float32)
    img = Image(arr, np.diag([2.0, 2.0, 5.0, 1.0]))
    return prepare(img, 2.0)  # same spacing: no resampling, odd sizes need padding


@pytest.mark.parametrize("tta", [TTA(((0, 0), (4, 0), (-4, 3), (0, -7))),
                                 TTA(((0, 0),), mirror_x=True),
                                 TTA(((0, 0), (8, 8)), mirror_x=True)])
def test_tta_passes_are_aligned_back_exactly(tta):
    prep, net = _prepared(), PointwiseNet().eval()
    plain = predict_probabilities(net, prep, 1, torch.device("cpu"))
    averaged = predict_probabilities(net, prep, 1, torch.device("cpu"), tta=tta)
    assert averaged.shape == plain.shape == (4, 37, 29, 5)
    # an off-by-one alignment of any pass would differ by O(1) on this noise image
    assert torch.allclose(averaged, plain, atol=1e-5)


def test_tta_changes_a_network_that_is_not_shift_equivariant():
    prep, net = _prepared(), MeanPoolNet().eval()
    plain = predict_probabilities(net, prep, 1, torch.device("cpu"))
    shifted = predict_probabilities(net, prep, 1, torch.device("cpu"), tta=TTA(((0, 0), (8, 8))))
    assert (shifted - plain).abs().max() > 0.01
    assert torch.allclose(shifted.sum(0), torch.ones_like(shifted[0]), atol=1e-5)  # still probabilities


def test_tta_config_checks():
    assert TTA(((0, 0), (4, -8)), True).passes == 4
    assert TTA(((0, 0), (4, -8))).margin == 8
    with pytest.raises(ValueError):
        TTA(())


def test_decide_labels_argmax_and_threshold():
    # classes: background, kidney, liver, spleen; one voxel per column
    p = torch.tensor([[0.50, 0.20, 0.10, 0.60, 0.30],
                      [0.40, 0.45, 0.35, 0.05, 0.30],
                      [0.05, 0.30, 0.50, 0.05, 0.40],
                      [0.05, 0.05, 0.05, 0.30, 0.00]])[None]
    assert decide_labels(p, 1).tolist() == [[0, 1, 2, 0, 2]]
    assert decide_labels(p, 1, 0.4).tolist() == [[1, 1, 2, 0, 2]]
    assert decide_labels(p, 1, 0.3).tolist() == [[1, 1, 1, 0, 1]]
    assert decide_labels(p, 1, 0.5).tolist() == [[0, 2, 2, 0, 2]]  # kidney 0.45 < 0.5: the best other class (liver)
    # two kidney classes: their sum is thresholded, the more probable side is kept
    q = torch.tensor([[0.40], [0.35], [0.25]])[None]
    assert decide_labels(q, 2).tolist() == [[0]]
    assert decide_labels(q, 2, 0.5).tolist() == [[1]]


def test_inference_config_round_trip_and_errors(tmp_path):
    s = InferenceConfig(((0, 0), (4, 0)), False, 0.4, "test")
    write_inference_config(s, tmp_path)
    assert read_inference_config(tmp_path) == s
    assert s.without_tta() == InferenceConfig(((0, 0),), False, 0.4, "test")
    assert read_inference_config(tmp_path / "missing") == InferenceConfig()
    for bad in ({"kidney_threshold": 1.5}, {"tta_shifts_px": []}, {"tta_shifts_px": [[100, 0]]}, {"tta": 1}):
        (tmp_path / "inference.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match="inference.json"):
            read_inference_config(tmp_path)


def test_no_tta_swaps_in_the_one_pass_qc_threshold(tmp_path):
    s = InferenceConfig(((0, 0), (8, 8)), False, 0.35, "test", low_confidence_threshold=1.466,
                        low_confidence_threshold_no_tta=0.9)
    write_inference_config(s, tmp_path)
    assert read_inference_config(tmp_path) == s
    fast = s.without_tta()
    assert fast.tta_shifts_px == ((0, 0),) and fast.kidney_threshold == 0.35
    assert fast.low_confidence_threshold == 0.9
    # a folder without the one-pass threshold keeps its only one, as before the field existed
    assert InferenceConfig(((0, 0), (8, 8)), low_confidence_threshold=1.466).without_tta().low_confidence_threshold == 1.466
    (tmp_path / "inference.json").write_text(json.dumps({"low_confidence_threshold_no_tta": -1}))
    with pytest.raises(InputError, match="low_confidence_threshold_no_tta"):
        read_inference_config(tmp_path)


def test_three_plane_qc_threshold_serves_only_averaged_planes_and_has_its_fast_twin(tmp_path):
    s = InferenceConfig(((0, 0), (8, 8)), low_confidence_threshold=1.0, low_confidence_threshold_no_tta=1.3,
                        low_confidence_threshold_three_planes=1.5, low_confidence_threshold_three_planes_no_tta=1.9)
    write_inference_config(s, tmp_path)
    assert read_inference_config(tmp_path) == s
    assert s.low_confidence_threshold_for(1) == 1.0 and s.low_confidence_threshold_for(3) == 1.5
    fast = s.without_tta()
    assert fast.low_confidence_threshold_for(1) == 1.3 and fast.low_confidence_threshold_for(3) == 1.9
    # without a three-plane value every prediction keeps the one threshold, as before the field
    plain = InferenceConfig(low_confidence_threshold=1.0)
    assert plain.low_confidence_threshold_for(3) == 1.0 and plain.without_tta().low_confidence_threshold_for(3) == 1.0
    (tmp_path / "inference.json").write_text(json.dumps({"low_confidence_threshold_three_planes": 0}))
    with pytest.raises(InputError, match="low_confidence_threshold_three_planes"):
        read_inference_config(tmp_path)


def test_neck_split_settings_round_trip_and_are_checked(tmp_path):
    s = InferenceConfig(neck_split_mm=8.0, component_ranking="probability")
    write_inference_config(s, tmp_path)
    assert read_inference_config(tmp_path) == s
    assert InferenceConfig().neck_split_mm is None and InferenceConfig().component_ranking == "core"
    for bad in ({"neck_split_mm": 0}, {"component_ranking": "largest"}):
        (tmp_path / "inference.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=next(iter(bad))):
            read_inference_config(tmp_path)


def test_low_confidence_kidney_threshold_round_trips_and_is_checked(tmp_path):
    s = InferenceConfig(kidney_threshold=0.5, low_confidence_threshold=1.0, kidney_threshold_low_confidence=0.35)
    write_inference_config(s, tmp_path)
    assert read_inference_config(tmp_path) == s
    assert s.without_tta().kidney_threshold_low_confidence == 0.35  # --fast redraws flagged scans too
    assert InferenceConfig().kidney_threshold_low_confidence is None
    for bad in ({"kidney_threshold": 0.5, "low_confidence_threshold": 1.0, "kidney_threshold_low_confidence": 1.2},
                {"low_confidence_threshold": 1.0, "kidney_threshold_low_confidence": 0.35},  # no kidney threshold
                {"kidney_threshold": 0.5, "kidney_threshold_low_confidence": 0.35}):  # nothing raises the flag
        (tmp_path / "inference.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match="kidney_threshold_low_confidence"):
            read_inference_config(tmp_path)


def test_model_folder_with_bad_inference_json_is_refused(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(default_model_dir(), folder)
    (folder / "inference.json").write_text("{\"kidney_threshold\": 0}")
    with pytest.raises(InputError, match="inference.json"):
        load_model(folder, "cpu")
    (folder / "inference.json").unlink()
    assert load_model(folder, "cpu").inference == InferenceConfig()


def test_no_tta_keeps_the_threshold_and_drops_the_passes(tmp_path):
    from kidneyseg.pipelines import configure_pipeline, get_pipeline

    folder = tmp_path / "m"
    shutil.copytree(default_model_dir(), folder)
    write_inference_config(InferenceConfig(((0, 0), (4, 0)), False, 0.4, "test"), folder)
    pipe = get_pipeline("mr-t2-unet", model=str(folder), device="cpu")
    assert pipe.bundle.inference.tta.passes == 2
    configure_pipeline(pipe, keep_largest=False, tta=False)
    assert pipe.keep_largest is False
    assert pipe.bundle.inference == InferenceConfig(((0, 0),), False, 0.4, "test")


def test_streamed_segment_equals_scoring_from_probabilities(tmp_path):
    """benchmarks/mr_inference_settings.py scores cached probabilities through
    ``MRKidneyPipeline.finish``; ``segment`` streams slice batches. Both must give the same mask."""
    from kidneyseg.api import example_dir
    from kidneyseg.io import read_image
    from kidneyseg.pipelines import get_pipeline

    img = read_image(example_dir() / "image_39.nii.gz", dtype=np.float32)
    img = Image(np.ascontiguousarray(img.array[:, :, 12:24]), img.affine)  # kidney slices only: fast
    folder = tmp_path / "m"
    shutil.copytree(default_model_dir(), folder)
    write_inference_config(InferenceConfig(((0, 0), (4, 0), (0, -4)), False, 0.35), folder)
    pipe = get_pipeline("mr-t2-unet", model=str(folder), device="cpu")
    streamed = pipe.segment(img)
    cfg = pipe.bundle.config
    prep = prepare(img, cfg.target_spacing_mm, cfg.clip_ratio, cfg.normalisation)
    probs = predict_probabilities(pipe.bundle.network, prep, cfg.context_slices, pipe.bundle.device,
                                  levels=len(cfg.channels), tta=pipe.bundle.inference.tta)
    labels = decide_labels(probs[None], cfg.kidney_classes, 0.35)[0].to(torch.uint8).numpy()
    scored = pipe.finish(img, labels, prep)
    assert (streamed.mask.array > 0).sum() > 1000
    assert np.array_equal(streamed.mask.array, scored.mask.array)
