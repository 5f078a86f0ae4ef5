"""Differentiable feature clustering (seed 001): the losses by hand, convergence and
determinism on a real crop."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from kidneyseg.api import example_dir
from kidneyseg.models.clustering import ClusteringNet, clustering_loss, continuity_loss, similarity_loss
from kidneyseg.preprocess import zscore_percentile
from kidneyseg.training.clustering import ClusterConfig, amx_available, optimise_clusters, resolve_precision


def _toy_response():
    """(1, 2, 3, 3, 3): channel 0 is 0 everywhere, channel 1 is -1, 2, 3 along the first axis."""
    r = torch.zeros(1, 2, 3, 3, 3)
    r[0, 1] = torch.tensor([-1.0, 2.0, 3.0])[:, None, None]
    return r


def test_losses_by_hand_on_a_3x3x3_toy():
    r = _toy_response()
    sim, labels = similarity_loss(r)
    # argmax: x=0 -> cluster 0 (0 > -1); x=1, 2 -> cluster 1
    assert labels[0, :, 0, 0].tolist() == [0, 1, 1]
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2)) + math.log1p(math.exp(-3))) / 3
    assert float(sim) == pytest.approx(expected, rel=1e-6)
    # along x the channel-1 differences are 3 and 1 (9 voxels each), channel 0 none: mean 36 / 36;
    # along y and z nothing changes
    assert float(continuity_loss(r)) == pytest.approx(1.0)
    total, _ = clustering_loss(r, continuity_weight=5.0)
    assert float(total) == pytest.approx(expected + 5.0, rel=1e-6)
    # axes of size 1 contribute nothing: only the x differences (3, 1, 0, 0) remain, mean 1
    assert float(continuity_loss(r[:, :, :, :1, :1])) == pytest.approx(1.0)


def test_network_shapes_2d_and_3d():
    assert ClusteringNet(2, 2, 8, 3)(torch.zeros(1, 2, 6, 5, 4)).shape == (1, 8, 6, 5, 4)
    assert ClusteringNet(1, 3, 8, 2)(torch.zeros(1, 1, 6, 5)).shape == (1, 8, 6, 5)
    with pytest.raises(ValueError, match="spatial_dims"):
        ClusteringNet(1, 2, 8, 4)


@pytest.fixture(scope="module")
def kidney_crop():
    img = np.asarray(nib.load(str(example_dir() / "image_39.nii.gz")).dataobj, dtype=np.float32)
    return zscore_percentile(img[61:93, 82:114, 8:14])[None]  # 32 x 32 x 6 around the right kidney


def test_converges_and_is_deterministic_on_a_real_crop(kidney_crop):
    cfg = ClusterConfig()
    a = optimise_clusters(kidney_crop, cfg)
    b = optimise_clusters(kidney_crop, cfg)
    assert a.converged and a.iterations < cfg.max_iterations
    assert np.array_equal(a.labels, b.labels) and a.losses == b.losses
    assert a.labels.shape == kidney_crop.shape[1:]
    assert 2 <= a.n_clusters < cfg.channels  # the optimisation merges most of the 50 initial features
    assert a.losses[-1] < 0.5 * a.losses[0]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_each_precision_converges_deterministically_on_a_real_crop(kidney_crop, precision):
    if precision == "bfloat16" and not amx_available():
        pytest.skip("bfloat16 is emulated on a CPU without AMX (11 min here); "
                    "test_bfloat16_is_deterministic_on_a_small_crop covers the path")
    cfg = ClusterConfig(precision=precision)
    a, b = optimise_clusters(kidney_crop, cfg), optimise_clusters(kidney_crop, cfg)
    assert a.dtype == precision and a.converged
    assert np.array_equal(a.labels, b.labels) and a.losses == b.losses
    assert 2 <= a.n_clusters < cfg.channels


def test_bfloat16_is_deterministic_on_a_small_crop(kidney_crop):
    """The bfloat16 path on any CPU: same labels and losses twice, computed in bfloat16, on an
    8 x 8 x 6 corner of the real crop with a short run (no convergence claimed at this size)."""
    small = np.ascontiguousarray(kidney_crop[:, 12:20, 12:20])
    cfg = ClusterConfig(precision="bfloat16", max_iterations=5, min_iterations=1)
    a, b = optimise_clusters(small, cfg), optimise_clusters(small, cfg)
    assert a.dtype == "bfloat16" and a.labels.shape == small.shape[1:]
    assert np.array_equal(a.labels, b.labels) and a.losses == b.losses and len(a.losses) >= 1


def test_precision_auto_is_bfloat16_only_on_a_cpu_with_amx(monkeypatch):
    import kidneyseg.training.clustering as clustering

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setattr(clustering, "amx_available", lambda: True)
    assert resolve_precision("auto", cpu) == torch.bfloat16 and resolve_precision("auto", cuda) == torch.float32
    monkeypatch.setattr(clustering, "amx_available", lambda: False)
    assert resolve_precision("auto", cpu) == torch.float32
    with pytest.raises(ValueError, match="precision"):
        ClusterConfig(precision="fp16")


def test_continuity_weight_gives_fewer_clusters(kidney_crop):
    few = optimise_clusters(kidney_crop, ClusterConfig(continuity_weight=5.0, max_iterations=80, epsilon=0.0))
    many = optimise_clusters(kidney_crop, ClusterConfig(continuity_weight=0.0, max_iterations=80, epsilon=0.0))
    assert few.n_clusters < many.n_clusters
    assert not few.converged and few.iterations == 80


def test_bad_volume():
    with pytest.raises(ValueError, match="axes"):
        optimise_clusters(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        optimise_clusters(np.full((1, 4, 4, 4), np.nan, np.float32))
