"""The one sliding-window entry every 3D network path uses (``mr-t2-unet`` 3D models,
``kits-unet3d``, the ``c2f-cascade`` tumour FCN).

MONAI's ``sliding_window_inference`` does the work: windows of ``patch_size``, ``overlap`` of
the patch between neighbours (0.5: stride half the patch, as nnU-Net), Gaussian blending,
inputs smaller than the patch padded and cropped back. Here: the device rules (windows run on
``device``, the stitched logits are kept on the CPU so a large volume does not fill a GPU),
``torch.inference_mode`` and optional mirror test-time augmentation (logits averaged over
flips of the spatial axes, nnU-Net's "mirroring").
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch


def mirror_flips(spatial_dims: int = 3) -> list[tuple[int, ...]]:
    """All ``2 ** spatial_dims`` flips of the spatial axes of an ``(N, C, ...)`` tensor, the
    identity ``()`` first."""
    axes = range(2, 2 + spatial_dims)
    return [f for k in range(spatial_dims + 1) for f in combinations(axes, k)]


def sliding_window_logits(network: torch.nn.Module, x: torch.Tensor, patch_size: Sequence[int],
                          device: torch.device, sw_batch_size: int = 2, overlap: float = 0.5,
                          mirror: bool = False) -> torch.Tensor:
    """Logits of ``network`` on a whole volume by Gaussian-weighted sliding window.

    Args:
        network: a 3D network in eval mode, on ``device``; ``(N, C_in, *patch) -> (N, C_out, *patch)``.
        x: float32 ``(1, C_in, R, A, S)`` on any device.
        patch_size: window size (voxels) along the three spatial axes.
        device: where the windows run.
        sw_batch_size: windows per forward pass.
        overlap: fraction of the window shared with its neighbour (0.5: nnU-Net).
        mirror: average the logits of all 8 mirrorings (the 7 flips cost 7 more passes).

    Returns:
        float32 CPU tensor ``(1, C_out, R, A, S)`` (logits, averaged over the mirrorings).
    """
    from monai.inferers import sliding_window_inference

    flips = mirror_flips(3) if mirror else [()]
    total = None
    with torch.inference_mode():
        for f in flips:
            xi = torch.flip(x, f) if f else x
            logits = sliding_window_inference(xi.to(device), tuple(patch_size), sw_batch_size, network,
                                              overlap=overlap, mode="gaussian", sw_device=device, device="cpu")
            logits = torch.flip(logits, f) if f else logits
            total = logits if total is None else total + logits
    return (total / len(flips)).float()


__all__ = ["mirror_flips", "sliding_window_logits"]
