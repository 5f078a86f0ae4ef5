"""Self-supervised through-plane super-resolution (seed 000, section II.E).

The paper raises 15 slices to 75 (x5) with a deep super-resolution network. We have no
external high-resolution data, so the network learns from the volume's own in-plane
resolution (the idea of SMORE, Zhao et al., 2018/2021): in-plane slices are degraded along
one axis by the factor (every ``factor``-th row kept), brought back by cubic-spline
interpolation, and a small residual 2D CNN learns to restore the original. Applied
through-plane, the volume is cubic-interpolated along the slice axis and every plane that
contains the slice axis (both orientations) is corrected by the CNN; the two are averaged.

Grid convention (pixel areas, scipy ``grid_mode=True``): each original slice is split into
``factor`` sub-slices of thickness ``spacing / factor``; sub-slice ``m`` of slice ``j`` has
its centre at index ``j + (m - (factor - 1) / 2) / factor``. Averaging the ``factor``
sub-slices of a slice gives back a value on the original grid (:func:`to_original_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from ..specs.base import SpecConfig


@dataclass(frozen=True)
class SRConfig(SpecConfig):
    """Settings of the through-plane super-resolution network.

    Attributes:
        factor: integer through-plane factor (the paper: 5).
        features: channels of the hidden convolutions.
        layers: 3x3 convolutions (ReLU between), residual over the cubic interpolation.
        patch: square training patch, pixels.
        steps: optimiser steps (Adam, L1 loss).
        lr: learning rate.
        batch: patches per step.
        seed: patch sampling and initialisation.
    """

    factor: int = 5
    features: int = 32
    layers: int = 6
    patch: int = 48
    steps: int = 600
    lr: float = 1e-3
    batch: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.factor < 2:
            raise ValueError(f"SRConfig.factor: expected an integer >= 2, got {self.factor}")


def cubic_upsample(volume: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Cubic B-spline interpolation by ``factor`` along ``axis`` (scipy ``zoom``, pixel-area grid).

    Returns:
        float32 array whose ``axis`` length is ``factor`` times the input's.
    """
    zoom = [1.0] * volume.ndim
    zoom[axis] = float(factor)
    return ndimage.zoom(np.asarray(volume, dtype=np.float32), zoom, order=3, grid_mode=True, mode="reflect")


def decimate(volume: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Keep the centre slice of every group of ``factor`` along ``axis`` (a trailing partial
    group is dropped): slice ``j`` of the result is input slice ``j * factor + factor // 2``.
    With an odd factor, :func:`cubic_upsample` of the result is back on the input's grid."""
    n = volume.shape[axis] // factor
    idx = np.arange(n) * factor + factor // 2
    return np.take(volume, idx, axis=axis)


def to_original_grid(volume: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Average each group of ``factor`` sub-slices along ``axis`` (the inverse grid of
    :func:`cubic_upsample`)."""
    v = np.moveaxis(volume, axis, -1)
    n = v.shape[-1] // factor
    v = v[..., : n * factor].reshape(v.shape[:-1] + (n, factor)).mean(axis=-1)
    return np.moveaxis(v, -1, axis)


def super_resolved_affine(affine: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Affine of the :func:`cubic_upsample` grid: the axis column divided by ``factor`` and the
    origin moved to the centre of the first sub-slice."""
    a = np.array(affine, dtype=np.float64)
    col = a[:3, axis].copy()
    a[:3, axis] = col / factor
    a[:3, 3] = a[:3, 3] - col * (factor - 1) / (2 * factor)
    return a


class _ResidualCNN(torch.nn.Module):
    def __init__(self, features: int, layers: int) -> None:
        super().__init__()
        mods: list[torch.nn.Module] = [torch.nn.Conv2d(1, features, 3, padding=1), torch.nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            mods += [torch.nn.Conv2d(features, features, 3, padding=1), torch.nn.ReLU(inplace=True)]
        mods.append(torch.nn.Conv2d(features, 1, 3, padding=1))
        self.body = torch.nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _scale(volume: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(volume, [0.5, 99.5])
    return float(lo), float(max(hi - lo, 1e-12))


class ThroughPlaneSR:
    """A trained through-plane super-resolution model (see the module docstring).

    Build with :meth:`train`; :meth:`apply` super-resolves a volume; :meth:`state` /
    :meth:`from_state` save and restore it (``torch.save`` of the returned dict).
    """

    def __init__(self, config: SRConfig, network: torch.nn.Module) -> None:
        self.config = config
        self.network = network.eval()

    @classmethod
    def train(cls, volumes: list[np.ndarray], slice_axes: list[int], config: SRConfig = SRConfig(),
              device: str | torch.device = "cpu", progress: bool = False) -> "ThroughPlaneSR":
        """Learn from the in-plane slices of ``volumes`` (no external data).

        Args:
            volumes: 3D arrays (e.g. the training volumes, or the one volume to enhance).
            slice_axes: the slice axis of each volume (its planes perpendicular are the
                in-plane slices used for training).
            config: :class:`SRConfig`.

        Raises:
            InputError: no volume, or in-plane slices smaller than ``config.patch``.
        """
        from tqdm import tqdm

        if not volumes:
            raise InputError("super-resolution: no training volume")
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        f = config.factor
        for vol, axis in zip(volumes, slice_axes):
            lo, span = _scale(vol)
            v = np.moveaxis((np.asarray(vol, dtype=np.float32) - lo) / span, axis, 0)
            if min(v.shape[1:]) < max(config.patch, 3 * f):
                raise InputError(f"super-resolution: in-plane size {v.shape[1:]} is below the patch {config.patch}")
            for sl in v:
                for ax in (0, 1):  # degrade each in-plane axis in turn
                    n = (sl.shape[ax] // f) * f
                    target = np.take(sl, np.arange(n), axis=ax)
                    low = cubic_upsample(decimate(target, f, ax), f, ax)
                    if ax == 0:  # the degraded axis always second, as at application time
                        target, low = target.T, low.T
                    pairs.append((low, target))
        net = _ResidualCNN(config.features, config.layers).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        p = config.patch
        bar = tqdm(range(config.steps), desc="super-resolution", disable=not progress, leave=False)
        net.train()
        for _ in bar:
            xs, ys = [], []
            for i in rng.integers(0, len(pairs), config.batch):
                low, target = pairs[i]
                r = rng.integers(0, low.shape[0] - p + 1)
                c = rng.integers(0, low.shape[1] - p + 1)
                xs.append(low[r:r + p, c:c + p])
                ys.append(target[r:r + p, c:c + p])
            x = torch.from_numpy(np.stack(xs)[:, None]).to(device)
            y = torch.from_numpy(np.stack(ys)[:, None]).to(device)
            loss = torch.nn.functional.l1_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        return cls(config, net.cpu())

    @torch.inference_mode()
    def apply(self, volume: np.ndarray, axis: int, device: str | torch.device = "cpu", batch: int = 16) -> np.ndarray:
        """Super-resolve ``volume`` by ``factor`` along ``axis``.

        Args:
            volume: 3D array.
            axis: its slice axis.

        Returns:
            float32 array, ``axis`` length multiplied by ``factor``, in the input's intensity
            units; its affine is :func:`super_resolved_affine`.
        """
        f = self.config.factor
        lo, span = _scale(volume)
        up = cubic_upsample((np.asarray(volume, dtype=np.float32) - lo) / span, f, axis)
        up = np.moveaxis(up, axis, -1)  # (A, B, S*f): planes (B, S*f) and (A, S*f)
        net = self.network.to(device)
        out = np.zeros_like(up)
        for plane_axis in (0, 1):
            planes = np.moveaxis(up, plane_axis, 0)  # (P, other, S*f); degraded axis second
            res = np.empty_like(planes)
            for i in range(0, planes.shape[0], batch):
                x = torch.from_numpy(np.ascontiguousarray(planes[i:i + batch])[:, None]).to(device)
                res[i:i + batch] = net(x)[:, 0].cpu().numpy()
            out += np.moveaxis(res, 0, plane_axis)
        out = out / 2 * span + lo
        return np.moveaxis(out, -1, axis).astype(np.float32)

    def state(self) -> dict:
        return {"config": self.config.to_dict(), "weights": self.network.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> "ThroughPlaneSR":
        config = SRConfig(**state["config"])
        net = _ResidualCNN(config.features, config.layers)
        net.load_state_dict(state["weights"])
        return cls(config, net)


def psnr_ssim(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM (scikit-image) over a stack of 2D slices, with the data range of
    the reference."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = float(reference.max() - reference.min()) or 1.0
    psnr = peak_signal_noise_ratio(reference, test, data_range=rng)
    ssim = float(np.mean([structural_similarity(r, t, data_range=rng) for r, t in zip(reference, test)]))
    return float(psnr), ssim


__all__ = ["SRConfig", "ThroughPlaneSR", "cubic_upsample", "decimate", "psnr_ssim", "super_resolved_affine",
           "to_original_grid"]
