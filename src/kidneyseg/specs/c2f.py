"""Method spec of ``c2f-cascade`` (seed 004): its config, the five networks, CT normalisation
and the square slice resizing, shared by the pipeline (:mod:`kidneyseg.pipelines.c2f_cascade`)
and the trainer (:mod:`kidneyseg.training.c2f`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from ..arrays import crop_around, crop_slices
from ..errors import InputError
from ..io import Image, to_canonical
from ..labels import KIDNEY_TUMOUR
from ..preprocess.resample import resample_volume
from .base import SpecConfig
from .kits import check_ct


LABELS: dict[int, str] = dict(KIDNEY_TUMOUR)
"""Output labels of ``c2f-cascade`` (KiTS19)."""


STAGES = ("coarse", "correction", "fine", "tumour3d", "tumour2d")
"""The five networks, in training order; ``<stage>.pt`` in the model folder."""


PAPER: dict[str, object] = {
    "spacing_mm": (0.7816, 0.7816, 3.0),  # 1.3: normalised spacing 3 x 0.7816 x 0.7816 mm
    "coarse_size": 128,  # 1.3: H_C = W_C = 128
    "correction_size": (256, 64),  # 1.3: H_A = 256, D_A = 64
    "fine_size": 160,  # 1.3: H_F = W_F = 160
    "kidney_threshold_ml": 18.3,  # 1.3: TH_vn = 10000 voxels, "roughly 18 ml" at that spacing
    "tumour_box_margin": 30,  # 2.4: a frame of 30 around S_F bounds the 3D CNN
}
"""``kidneyseg train c2f-cascade --preset paper``: every :class:`C2FConfig` value seed 004
(Zhang et al., KiTS19) states, by section. The defaults already are these values; what seed 004
leaves open (HU window, channels, optimiser, iterations, batch sizes) keeps kidneyseg's
defaults. The losses (Dice for C, A, F; cross-entropy for the 3D FCN, section 2.1) and the
3D FCN's thirds of background, kidney and tumour patch centres (2.1) are fixed in
:mod:`kidneyseg.training.c2f`."""


@dataclass(frozen=True)
class C2FConfig(SpecConfig):
    """Settings of ``c2f-cascade`` (seed 004 values unless said otherwise).

    Attributes:
        spacing_mm: working voxel size along R, A, S (seed 004: 0.7816 x 0.7816 in-plane, 3 mm
            slices).
        hu_window: HU clipped to this window and scaled to [0, 1] (not stated in seed 004; ours).
        coarse_size: square size of the resized axial slices for C (128).
        correction_size: (A, S) size of the sagittal crops for A (H_A 256, D_A 64).
        fine_size: square size of the axial crops for F and T (160).
        kidney_threshold_ml: a coarse component of at least this volume is a kidney
            (10,000 voxels at seed 004's spacing: 18.3 mL).
        channels_2d: feature maps per level of the 2D U-Nets C, A, F, T (MONAI ``UNet``);
            every size above must be a multiple of ``2 ** (len(channels_2d) - 1)``.
        channels_3d: feature maps of the 3D FCN (two poolings: (2, 2, 1) then (2, 2, 2)).
        res_units: residual units per U-Net block (MONAI; 0 = plain convolutions).
        tumour_patch: 3D FCN patch (R, A, S); multiples of (4, 4, 2).
        tumour_box_margin: voxels added on each side of the fine mask's box for the 3D FCN (30).
        tumour_min_voxels: fewer 3D detections than this count as "no tumour detected".
        iterations: training steps of each of the five networks.
        stage_iterations: per-network overrides of ``iterations``, e.g. ``{"fine": 3000}``.
        batch_2d, batch_3d: training batch sizes.
        learning_rate: Adam learning rate (seed 004 does not name its optimiser).
        jitter_px: standard deviation (voxels) of the random shift of crop centres in training,
            standing in for the coarse mask's error (crops are centred on the reference in
            training and on the coarse or guide mask at test, seed 004 section 1.2).
        slice_batch: slices per forward pass at inference.
        seed, num_threads, checkpoint_every, device: as in the other trainers.
    """

    spacing_mm: tuple[float, float, float] = (0.7816, 0.7816, 3.0)
    hu_window: tuple[float, float] = (-200.0, 400.0)
    coarse_size: int = 128
    correction_size: tuple[int, int] = (256, 64)
    fine_size: int = 160
    kidney_threshold_ml: float = 18.3
    channels_2d: tuple[int, ...] = (16, 32, 64, 128, 256)
    channels_3d: tuple[int, ...] = (16, 32, 64)
    res_units: int = 1
    tumour_patch: tuple[int, int, int] = (64, 64, 16)
    tumour_box_margin: int = 30
    tumour_min_voxels: int = 100
    iterations: int = 1000
    stage_iterations: dict[str, int] = field(default_factory=dict)
    batch_2d: int = 8
    batch_3d: int = 2
    learning_rate: float = 1e-3
    jitter_px: float = 6.0
    slice_batch: int = 16
    seed: int = 0
    num_threads: int = 0
    checkpoint_every: int = 50
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("spacing_mm", "hu_window", "correction_size", "channels_2d", "channels_3d", "tumour_patch"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise InputError(f"spacing_mm: expected three positive values, got {self.spacing_mm}")
        if self.hu_window[1] <= self.hu_window[0]:
            raise InputError(f"hu_window: expected (low, high) with low < high, got {self.hu_window}")
        m = 2 ** (len(self.channels_2d) - 1)
        for name, sizes in (("coarse_size", (self.coarse_size,)), ("correction_size", self.correction_size),
                            ("fine_size", (self.fine_size,))):
            if any(s < m or s % m for s in sizes):
                raise InputError(f"{name}: {sizes} must be multiples of {m} (2 ** (levels - 1) of channels_2d)")
        if len(self.channels_3d) != 3 or len(self.tumour_patch) != 3 or any(
                p % d for p, d in zip(self.tumour_patch, (4, 4, 2))):
            raise InputError(f"tumour_patch {self.tumour_patch} / channels_3d {self.channels_3d}: expected three "
                             "channel counts and a patch that is a multiple of (4, 4, 2)")
        if self.iterations < 1 or self.kidney_threshold_ml <= 0:
            raise InputError("iterations and kidney_threshold_ml: expected positive values")
        unknown = set(self.stage_iterations) - set(STAGES)
        if unknown or any(int(v) < 1 for v in self.stage_iterations.values()):
            raise InputError(f"stage_iterations: expected positive counts for {', '.join(STAGES)}, "
                             f"got {self.stage_iterations}")

    def iterations_of(self, stage: str) -> int:
        """Training steps of one network (``stage_iterations`` or ``iterations``)."""
        return int(self.stage_iterations.get(stage, self.iterations))


def predict_2d(net: torch.nn.Module, x: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Foreground probability ``(N, 1, ...)`` of one of the 2-class 2D networks on ``x``
    ``(N, C, H, W)`` float32, in batches of ``batch`` slices (channels-last, inference mode)."""
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            logits = net(x[i:i + batch].to(device).contiguous(memory_format=torch.channels_last))
            out.append(torch.softmax(logits.float(), 1)[:, 1:].cpu())
    return torch.cat(out) if out else torch.zeros((0, 1, *x.shape[2:]))


def build_network(stage: str, config: C2FConfig) -> torch.nn.Module:
    """The network of one stage: MONAI 2D U-Nets (``kidneyseg.models.unet.build_unet2d``) for
    C, A, F (1 input channel) and T (CT + kidney mask), a MONAI 3D U-Net with two poolings for
    the 3D FCN (seed 004 cites an FCN with a long skip connection); 2 output classes each."""
    from ..models.unet import build_unet2d, build_unet3d

    if stage == "tumour3d":
        return build_unet3d(1, 2, config.channels_3d, [(2, 2, 1), (2, 2, 2)], config.res_units)
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return build_unet2d(2 if stage == "tumour2d" else 1, 2, config.channels_2d, config.res_units)


def normalise_ct(array: np.ndarray, config: C2FConfig) -> np.ndarray:
    """HU clipped to ``config.hu_window`` and scaled to [0, 1], float32."""
    lo, hi = config.hu_window
    return ((np.clip(np.asarray(array, np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def prepare_ct(image: Image, config: C2FConfig):
    """``(canonical Image, reorientation, (R, A, S) float32 on the working grid)``.

    Raises:
        InputError: see :func:`kidneyseg.specs.kits.check_ct`.
    """
    check_ct(image)
    canon, reo = to_canonical(image)
    arr = resample_volume(np.asarray(canon.array, np.float32), canon.spacing_mm, config.spacing_mm, order=3)
    return canon, reo, normalise_ct(arr, config)


def square_resize(slices: np.ndarray, size: int, nearest: bool = False) -> torch.Tensor:
    """``(N, X, Y)`` slices -> ``(N, 1, size, size)`` float32: zero-padded (centred) to a square,
    then resized (bilinear, or nearest for masks; ``torch.nn.functional.interpolate``)."""
    t = torch.as_tensor(np.ascontiguousarray(slices), dtype=torch.float32)[:, None]
    x, y = t.shape[-2:]
    side = max(x, y)
    px, py = side - x, side - y
    t = torch.nn.functional.pad(t, (py // 2, py - py // 2, px // 2, px - px // 2))
    mode = "nearest-exact" if nearest else "bilinear"
    return torch.nn.functional.interpolate(t, size=(size, size), mode=mode,
                                           **({} if nearest else {"align_corners": False}))


def square_restore(pred: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`square_resize` for ``(N, C, size, size)`` -> ``(N, C, X, Y)`` (bilinear)."""
    x, y = shape
    side = max(x, y)
    t = torch.nn.functional.interpolate(pred, size=(side, side), mode="bilinear", align_corners=False)
    px, py = (side - x) // 2, (side - y) // 2
    return t[..., px:px + x, py:py + y]


CONNECTIVITY_26 = np.ones((3, 3, 3), bool)  # 26-connectivity


def paste_max(out: np.ndarray, crop: np.ndarray, centre: tuple[int, ...]) -> None:
    """Paste ``crop`` (last axes) into ``out`` around ``centre``, keeping the maximum where
    something is there already (the inverse of :func:`~kidneyseg.arrays.crop_around`)."""
    n = len(centre)
    sl = crop_slices(centre, crop.shape[-n:], out.shape[-n:])
    if sl is None:
        return
    src, dst = sl
    region = out[(Ellipsis, *src)]
    np.maximum(region, crop[(Ellipsis, *dst)], out=region)


def kidney_components(mask: np.ndarray, voxel_ml: float, threshold_ml: float) -> tuple[np.ndarray, list[int]]:
    """Seed 004's kidney count (section 1.2): 26-connected components (``scipy.ndimage.label``)
    of a 3D mask, and the ids of those of at least ``threshold_ml``, largest first.

    Returns:
        ``(component label array int32, kidney component ids)``; ``len(ids) != 2`` is abnormal.
    """
    lab, n = ndimage.label(mask, structure=CONNECTIVITY_26)
    if n == 0:
        return lab, []
    sizes = np.bincount(lab.ravel())[1:]
    ids = [int(i) + 1 for i in np.argsort(sizes)[::-1] if sizes[i] * voxel_ml >= threshold_ml]
    return lab, ids


def centroid_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(round(c)) for c in ndimage.center_of_mass(mask))


def fine_crops(guide_ids: list[int], guide_lab: np.ndarray, size: int) -> list[tuple[tuple[int, int], range]]:
    """For each guide kidney: its axial centroid (R, A) and the axial slices of its extent +-2."""
    out = []
    for i in guide_ids:
        comp = guide_lab == i
        r, a, _ = centroid_index(comp)
        zs = np.flatnonzero(comp.any((0, 1)))
        out.append(((r, a), range(max(int(zs[0]) - 2, 0), min(int(zs[-1]) + 3, comp.shape[2]))))
    return out


def crop_axial(vol: np.ndarray, centre_ra: tuple[int, int], ks, size: int, fill: float = 0.0) -> np.ndarray:
    """Axial crops ``(len(ks), size, size)`` around ``centre_ra`` of the slices ``ks``."""
    return np.stack([crop_around(vol[:, :, k], centre_ra, (size, size), fill) for k in ks])
