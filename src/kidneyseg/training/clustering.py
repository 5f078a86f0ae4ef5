"""Per-volume unsupervised optimisation of :class:`~kidneyseg.models.clustering.ClusteringNet`
(seed 001, sections 2.2 and 3): no annotation, one image at a time, CPU or CUDA.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..models.clustering import ClusteringNet, clustering_loss
from ..specs.unsupervised import PRECISIONS, ClusterConfig


_INIT_LOCK = threading.Lock()


def amx_available() -> bool:
    """True when this CPU has AMX tiles (fast bfloat16 matrix products in oneDNN); uses
    ``torch.cpu._is_amx_tile_supported``, private in torch 2.x, so any failure reads as False."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - a torch without the probe has no AMX path we know of
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of :func:`optimise_clusters`: ``"auto"`` is bfloat16 on a CPU with AMX
    (:func:`amx_available`) and float32 otherwise (CUDA included)."""
    if precision == "bfloat16" or (precision == "auto" and device.type == "cpu" and amx_available()):
        return torch.bfloat16
    return torch.float32


@dataclass
class ClusteringResult:
    """Outcome of :func:`optimise_clusters`.

    Attributes:
        labels: int64 cluster index per voxel, shape of the input's spatial axes.
        n_clusters: distinct clusters in ``labels``.
        iterations: optimisation steps taken.
        converged: the epsilon criterion was met before ``max_iterations``.
        losses: loss after each step.
        seconds: wall time.
        dtype: compute dtype of the network's forward pass (``"float32"`` or ``"bfloat16"``).
    """

    labels: np.ndarray
    n_clusters: int
    iterations: int
    converged: bool
    losses: list[float]
    seconds: float
    dtype: str = "float32"


def optimise_clusters(volume: np.ndarray, config: ClusterConfig = ClusterConfig(), device: str | torch.device = "cpu") -> ClusteringResult:
    """Cluster one image by optimising a fresh network on it.

    Args:
        volume: float array ``(C, X, Y, Z)`` (3D) or ``(C, X, Y)`` (one 2D slice), channels
            normalised by the caller (e.g. z-scored); typically a region of interest.
        config: :class:`ClusterConfig`.
        device: ``"cpu"``, ``"cuda"`` or a torch device.

    Returns:
        :class:`ClusteringResult`.

    Raises:
        ValueError: wrong number of axes, or non-finite values.

    Source: seed 001 equations (1)-(3) and section 3 (SGD, momentum 0.9, lr 0.01, lambda 5,
    epsilon 0.005).
    """
    arr = np.asarray(volume, dtype=np.float32)
    if arr.ndim != config.spatial_dims + 1:
        raise ValueError(f"volume: expected {config.spatial_dims + 1} axes (C, spatial...), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("volume: contains NaN or Inf")
    t0 = time.perf_counter()
    dev = torch.device(device)
    with _INIT_LOCK:  # the initial weights come from torch's global generator, shared by threads
        torch.manual_seed(config.seed)
        net = ClusteringNet(arr.shape[0], config.n_blocks, config.channels, config.spatial_dims)
    net = net.to(dev)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=config.learning_rate, momentum=config.momentum)
    x = torch.from_numpy(arr)[None].to(dev)
    dtype = resolve_precision(config.precision, dev)
    losses: list[float] = []
    converged = False
    labels = None
    for it in range(config.max_iterations):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            response = net(x)
        loss, labels = clustering_loss(response.float(), config.continuity_weight)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if it + 1 >= config.min_iterations and len(losses) > 1 and abs(losses[-1] - losses[-2]) < config.epsilon:
            converged = True
            break
    out = labels[0].cpu().numpy()
    return ClusteringResult(out, int(np.unique(out).size), len(losses), converged, losses,
                            time.perf_counter() - t0, str(dtype).removeprefix("torch."))


def optimise_clusters_by_slice(volume: np.ndarray, config: ClusterConfig, device: str | torch.device,
                               slice_axis: int) -> tuple[np.ndarray, int, bool]:
    """The 2D ablation of seed 001: :func:`optimise_clusters` on each slice along
    ``slice_axis`` on its own (``config.spatial_dims`` 2), cluster indices made unique per
    slice (slice ``k``'s clusters are offset by ``k * config.channels``).

    Args:
        volume: float ``(C, X, Y, Z)``.
        slice_axis: spatial axis (0-2) across the slices.

    Returns:
        ``(labels, iterations, converged)``: int64 ``(X, Y, Z)``, the sum of the slices'
        iterations, and whether every slice converged.
    """
    moved = np.moveaxis(volume, slice_axis + 1, 1)
    labels = np.empty(moved.shape[1:], dtype=np.int64)
    iterations, converged = 0, True
    for k in range(moved.shape[1]):
        res = optimise_clusters(moved[:, k], config, device)
        labels[k] = res.labels + k * config.channels
        iterations += res.iterations
        converged &= res.converged
    return np.moveaxis(labels, 0, slice_axis), iterations, converged


__all__ = ["PRECISIONS", "ClusterConfig", "ClusteringResult", "amx_available", "optimise_clusters", "optimise_clusters_by_slice",
           "resolve_precision"]
