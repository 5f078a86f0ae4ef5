"""CPU speed-ups for trained networks that leave their outputs unchanged (to float32 rounding).

``torch.nn.InstanceNorm2d/3d`` without running statistics normalises every channel of every
sample by its own mean and variance. That is exactly ``group_norm`` with one group per
channel, and PyTorch's CPU ``group_norm`` kernel is faster than its ``instance_norm`` (which
reshapes to a batch norm): measured 2026-12-03 on this project's MR U-Net, 8 slices of
272 x 272, one thread: 0.243 s -> 0.183 s per forward with channels-last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNormAsGroupNorm(nn.Module):
    """An ``InstanceNorm{1,2,3}d`` (``track_running_stats=False``) evaluated with
    ``torch.nn.functional.group_norm(x, num_groups=C)``; the same parameters (``weight``,
    ``bias`` when affine) and ``eps``.

    Args:
        norm: the instance norm to replace; its parameters are shared, not copied.
    """

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm):
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


def instance_norm_as_group_norm(network: nn.Module) -> int:
    """Replace, in place, every instance norm of ``network`` that uses per-sample statistics
    (``track_running_stats=False``, the default of MONAI's ``UNet``) by
    :class:`InstanceNormAsGroupNorm`. For inference: the state dict keeps its keys.

    Returns:
        the number of modules replaced.
    """
    replaced = 0
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
                setattr(module, name, InstanceNormAsGroupNorm(child))
                replaced += 1
    return replaced
