"""2D U-Net builder for slice-wise (2.5D) kidney segmentation."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet


def build_unet2d(in_channels: int, out_channels: int, channels: tuple[int, ...], num_res_units: int) -> torch.nn.Module:
    """A MONAI residual U-Net over 2D slices.

    Args:
        in_channels: number of input slices (the slice itself plus its neighbours: 2.5D).
        out_channels: classes including background.
        channels: feature maps per level, e.g. ``(16, 32, 64, 128, 256)``; every level but
            the last downsamples by 2, so input sizes must be multiples of
            ``2 ** (len(channels) - 1)``.
        num_res_units: residual units per block (0 gives plain convolutions).

    Returns:
        ``monai.networks.nets.UNet`` taking ``(B, in_channels, X, Y)`` float32 and returning
        logits ``(B, out_channels, X, Y)``. Source: Kerfoot et al. 2018 via MONAI, instance
        normalisation.
    """
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple([2] * (len(channels) - 1)),
        num_res_units=num_res_units,
        norm="INSTANCE",
    )


def build_unet3d(in_channels: int, out_channels: int, channels: tuple[int, ...], strides: list[tuple[int, ...]],
                 num_res_units: int) -> torch.nn.Module:
    """A MONAI residual 3D U-Net with per-level (anisotropic) strides.

    Args:
        in_channels: input channels (1 for one MR sequence).
        out_channels: classes including background.
        channels: feature maps per level.
        strides: ``len(channels) - 1`` tuples ``(sx, sy, sz)``, e.g. ``(2, 2, 1)`` to pool
            in-plane only.
        num_res_units: residual units per block.

    Returns:
        ``monai.networks.nets.UNet`` taking ``(B, C, X, Y, Z)``, returning logits.
    """
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(tuple(s) for s in strides),
        num_res_units=num_res_units,
        norm="INSTANCE",
    )


def build_dynunet(plan, in_channels: int, out_channels: int) -> torch.nn.Module:
    """The nnU-Net-style 3D U-Net of a :class:`kidneyseg.planning.Plan` (MONAI ``DynUNet``).

    Per-level kernels and strides come from the plan (anisotropic: kernel 1 and stride 1 on a
    coarse axis until the spacings meet), filters from ``plan.filters``, instance
    normalisation, leaky ReLU, transposed-convolution upsampling, and deep supervision with
    ``plan.deep_supervision_levels`` extra heads (seed 002, section 2.2).

    Returns:
        ``DynUNet`` taking ``(B, in_channels, R, A, S)`` float32 (each spatial size a multiple
        of the plan's pooling product) and returning logits ``(B, out_channels, R, A, S)`` in
        eval mode; in train mode with deep supervision, ``(B, 1 + levels, out_channels, R, A, S)``
        (lower-resolution heads upsampled by MONAI).
    """
    from monai.networks.nets import DynUNet

    levels = int(plan.deep_supervision_levels)
    return DynUNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
        kernel_size=[list(k) for k in plan.kernel_sizes], strides=[list(s) for s in plan.strides],
        upsample_kernel_size=[list(s) for s in plan.strides[1:]], filters=list(plan.filters),
        norm_name="instance", deep_supervision=levels > 0, deep_supr_num=max(levels, 1), res_block=False,
    )
