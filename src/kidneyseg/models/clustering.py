"""The small CNN and the two losses of differentiable feature clustering (seed 001, section 2.2
and 3; after Kim, Kanezaki and Tanaka, "Unsupervised learning of image segmentation based on
differentiable feature clustering", IEEE TIP 2020), in 2D or 3D.

The network maps an image ``X`` (``(B, C, X, Y[, Z])``) to a response map ``Y`` with ``p``
channels; each voxel's cluster is ``argmax_j Y_j`` (equation 1's ``c``). It is optimised on
the one image being segmented, without any annotation.
"""

from __future__ import annotations

import torch
from torch import nn


class ClusteringNet(nn.Sequential):
    """``n_blocks`` blocks of Conv(3x3[x3], stride 1, padding 1) -> ReLU -> BatchNorm with
    ``channels`` filters, then a 1x1[x1] convolution and BatchNorm giving the response map.

    Args:
        in_channels: image channels (1, or several co-registered sequences: early fusion).
        n_blocks: N of the paper (default 2, its ablation's best).
        channels: p of the paper, the number of features and the largest number of clusters
            (default 50).
        spatial_dims: 3 (the paper's method) or 2 (its 2D ablation, slice by slice).

    Input ``(B, in_channels, X, Y[, Z])`` float32; output ``(B, channels, X, Y[, Z])``.
    """

    def __init__(self, in_channels: int = 1, n_blocks: int = 2, channels: int = 50, spatial_dims: int = 3) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, got {spatial_dims}")
        if n_blocks < 1 or channels < 2 or in_channels < 1:
            raise ValueError(f"expected n_blocks >= 1, channels >= 2, in_channels >= 1; got {n_blocks}, {channels}, {in_channels}")
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        norm = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(n_blocks):
            layers += [conv(c, channels, kernel_size=3, stride=1, padding=1), nn.ReLU(inplace=True), norm(channels)]
            c = channels
        layers += [conv(channels, channels, kernel_size=1), norm(channels)]
        super().__init__(*layers)
        self.spatial_dims = spatial_dims


def similarity_loss(response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature similarity loss, equation (1): cross-entropy between the response map and its
    own argmax labels, averaged over voxels.

    Args:
        response: ``(B, p, *spatial)`` float tensor.

    Returns:
        ``(loss, labels)``: a scalar tensor, and the int64 argmax labels ``(B, *spatial)``
        used as targets (no gradient flows through them).
    """
    labels = response.detach().argmax(dim=1)
    return nn.functional.cross_entropy(response, labels), labels


def continuity_loss(response: torch.Tensor) -> torch.Tensor:
    """Spatial continuity loss, equation (2): L1 norm of the differences between neighbouring
    voxels' response vectors along every spatial axis, each axis averaged over its
    differences, summed over axes.

    Args:
        response: ``(B, p, *spatial)`` float tensor with 1, 2 or 3 spatial axes.

    Returns:
        Scalar tensor. A spatial axis of size 1 contributes 0.
    """
    total = response.new_zeros(())
    for axis in range(2, response.ndim):
        n = response.shape[axis]
        if n > 1:
            diff = response.narrow(axis, 1, n - 1) - response.narrow(axis, 0, n - 1)
            total = total + diff.abs().mean()
    return total


def clustering_loss(response: torch.Tensor, continuity_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Equation (3): ``similarity + lambda * continuity``.

    The paper writes both terms as sums over voxels; here both are means (as in Kim et al.'s
    reference implementation, whose normalisation a weight such as the paper's lambda = 5
    presumes), so the balance does not change with the size of the region of interest.

    Returns:
        ``(loss, labels)`` as in :func:`similarity_loss`.
    """
    sim, labels = similarity_loss(response)
    return sim + continuity_weight * continuity_loss(response), labels
