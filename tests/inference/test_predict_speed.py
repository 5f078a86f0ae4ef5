"""CPU speed-ups that must not change results: instance norm evaluated as group norm, and
test-time passes skipped on slices where the first pass finds no kidney."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from kidneyseg.inference import TestTimeAugmentation as TTA  # aliased: pytest would collect Test*
from kidneyseg.inference.cpu import InstanceNormAsGroupNorm, instance_norm_as_group_norm
from kidneyseg.inference.predict import TTA_SKIP_BELOW, predict_labels_2d, prepare
from kidneyseg.io import Image


@pytest.mark.parametrize("dims,affine", [(2, False), (2, True), (3, False)])
def test_group_norm_swap_gives_the_same_logits(dims, affine):
    torch.manual_seed(0)
    net = UNet(dims, 1, 3, (4, 8, 16), (2, 2), num_res_units=1,
               norm=("instance", {"affine": affine})).eval()
    if affine:  # non-trivial affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm2d):
                torch.nn.init.normal_(m.weight)
                torch.nn.init.normal_(m.bias)
    fast = copy.deepcopy(net)
    n = instance_norm_as_group_norm(fast)
    assert n == sum(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in net.modules()) > 0
    assert not any(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in fast.modules())
    assert fast.state_dict().keys() == net.state_dict().keys()
    x = torch.randn(2, 1, *([24] * dims)) * 3 + 1
    with torch.inference_mode():
        assert torch.allclose(fast(x), net(x), atol=1e-4)


def test_instance_norm_with_running_stats_is_left_alone():
    net = torch.nn.Sequential(torch.nn.InstanceNorm2d(4, track_running_stats=True), torch.nn.InstanceNorm2d(4))
    assert instance_norm_as_group_norm(net) == 1
    assert isinstance(net[0], torch.nn.InstanceNorm2d) and isinstance(net[1], InstanceNormAsGroupNorm)


class CountingNet(torch.nn.Module):
    """Kidney logit = 8 x the input - 4 plus a random-but-fixed shift-dependent term, so that TTA
    passes differ; records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        c = x[:, 1:2]
        bumpy = torch.nn.functional.avg_pool2d(c, 4, ceil_mode=True)
        bumpy = torch.nn.functional.interpolate(bumpy, size=c.shape[2:], mode="nearest")
        return torch.cat([torch.zeros_like(c), 8 * c + bumpy - 4], 1)


def test_tta_is_skipped_only_on_slices_without_kidney():
    rng = np.random.default_rng(0)
    arr = np.full((32, 32, 10), -1.0, np.float32)
    arr[8:20, 10:22, 3:6] = 2.0  # "kidney" on slices 3-5 only
    arr += rng.normal(0, 0.05, arr.shape).astype(np.float32)
    prep = prepare(Image(arr, np.diag([2.0, 2.0, 5.0, 1.0])), 2.0)
    tta = TTA(((0, 0), (4, 0), (0, 4), (4, 4)))
    net = CountingNet()
    outs = {}
    for skip in (False, True):
        net.calls.clear()
        prob = np.empty(prep.canonical.shape, np.float32)
        labels = predict_labels_2d(net, prep, 1, torch.device("cpu"), batch_slices=10, levels=3, tta=tta,
                                   kidney_classes=1, threshold=0.3, kidney_probability=prob,
                                   skip_empty_slices=skip)
        outs[skip] = (labels, prob, list(net.calls))
    full, fast = outs[False], outs[True]
    assert full[2] == [10, 10, 10, 10]
    first_pass = np.empty(prep.canonical.shape, np.float32)
    predict_labels_2d(net, prep, 1, torch.device("cpu"), batch_slices=10, levels=3, kidney_classes=1,
                      kidney_probability=first_pass)
    kidney_slices = np.flatnonzero((first_pass >= TTA_SKIP_BELOW).any((0, 1)))
    others = np.setdiff1d(np.arange(10), kidney_slices)
    assert 0 < len(kidney_slices) < 10
    # the first pass on all 10 slices, the other three only on the slices where it found kidney
    assert fast[2] == [10] + [len(kidney_slices)] * 3
    np.testing.assert_array_equal(fast[0], full[0])
    np.testing.assert_allclose(fast[1][:, :, kidney_slices], full[1][:, :, kidney_slices], atol=1e-6)
    np.testing.assert_allclose(fast[1][:, :, others], first_pass[:, :, others], atol=1e-6)
