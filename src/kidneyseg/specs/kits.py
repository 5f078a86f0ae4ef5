"""Method spec of ``kits-unet3d`` (seed 002): its config, output regions, CT checks and
normalisation, shared by the pipeline (:mod:`kidneyseg.pipelines.kits_unet3d`) and the trainer
(:mod:`kidneyseg.training.kits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..io import Image, to_canonical
from ..planning import Plan
from ..preprocess.normalise import zscore_percentile
from ..preprocess.resample import resample_volume
from .base import SpecConfig


REGIONS = ("kidney_and_masses", "masses", "tumor")
"""Network output channels (KiTS21/23 hierarchical evaluation regions)."""


AIR_HU = -200.0
"""A CT in HU has air (about -1000); if the 1st percentile is above this, it is not HU."""


@dataclass(frozen=True)
class KitsConfig(SpecConfig):
    """Training and inference settings of ``kits-unet3d`` (the network shape is in the plan).

    Attributes:
        iterations: training steps (seed 002: 1000 epochs x 250 batches on a GPU).
        learning_rate: initial SGD learning rate, poly decay (exponent 0.9) to 0; seed 002: 0.06.
        momentum: SGD momentum, Nesterov (seed 002: 0.99).
        weight_decay: SGD weight decay.
        grad_clip: gradient-norm clip (nnU-Net: 12).
        foreground_patches: share of patches centred on foreground (seed 002: a third).
        min_foreground_fraction: such a patch is redrawn (up to ``foreground_tries`` times) until
            at least this share of it is foreground; the best draw is kept when none reaches it
            (a third, as the paper states; reachable only when the patch is small next to the
            kidney, see ``benchmarks/results/ct_phantoms.md``).
        foreground_tries: draws per foreground patch.
        augment_probability: probability of each augmentation (mirroring per axis, rotation,
            brightness, gamma, contrast, scaling); seed 002: 0.4.
        rotation_deg: maximum rotation about each axis.
        scale: maximum relative zoom.
        mirror_tta: average predictions over mirrored copies at inference (8 with 3 axes).
        keep_components: kidney+masses components kept at inference (the two largest, and the
            third only if ``n_kidneys_max`` is 3); 0 keeps every component (seed 002, 2.7: no
            post-processing).
        threshold: probability threshold of each region.
        sw_batch_size: windows per forward pass at inference.
        seed: numpy/torch seed.
        num_threads: torch threads (0: torch default).
        checkpoint_every: iterations between checkpoints.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    iterations: int = 2000
    learning_rate: float = 0.06
    momentum: float = 0.99
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    foreground_patches: float = 1 / 3
    min_foreground_fraction: float = 1 / 3
    foreground_tries: int = 10
    augment_probability: float = 0.4
    rotation_deg: float = 15.0
    scale: float = 0.15
    mirror_tta: bool = False
    keep_components: int = 2
    threshold: float = 0.5
    sw_batch_size: int = 1
    seed: int = 0
    num_threads: int = 0
    checkpoint_every: int = 50
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise InputError(f"iterations: expected >= 1, got {self.iterations}")
        if not 0 <= self.foreground_patches <= 1 or not 0 <= self.min_foreground_fraction <= 1:
            raise InputError("foreground_patches and min_foreground_fraction: expected values in [0, 1]")
        if not 0 <= self.augment_probability <= 1:
            raise InputError(f"augment_probability: expected a value in [0, 1], got {self.augment_probability}")
        if self.learning_rate <= 0:
            raise InputError(f"learning_rate: expected > 0, got {self.learning_rate}")
        if self.keep_components < 0:
            raise InputError(f"keep_components: expected >= 0 (0: keep every component), got {self.keep_components}")



PAPER: dict[str, object] = {
    "iterations": 1000 * 250,  # 2.5: 1000 epochs of 250 batches
    "learning_rate": 0.06,  # 2.5: SGD, initial learning rate 0.06
    "momentum": 0.99,  # 2.5: 0.99 momentum, Nesterov
    "foreground_patches": 1 / 3,  # 2.5: foreground oversampling
    "min_foreground_fraction": 1 / 3,  # 2.5: "at least one-third of each patch" foreground
    "augment_probability": 0.4,  # 2.2: each augmentation with probability 0.4
    "mirror_tta": False,  # 2.6: sliding window only, no test-time mirroring
    "keep_components": 0,  # 2.7: "without any further processing"
}
"""``kidneyseg train kits-unet3d --preset paper``: every :class:`KitsConfig` value seed 002
(Zang et al., KiTS21) states, by section. Where the default differs (``iterations`` 2000 for a
CPU, ``keep_components`` 2) the README's KiTS recipe says why."""

PAPER_PLAN: dict[str, object] = {
    "normalisation": "case_percentile",  # 2.2: per-case 0.5/99.5 percentile clip, then z-score
    "target_spacing_mm": (1.99, 1.99, 1.99),  # 2.2: isotropic 1.99 mm
    "base_filters": 32,  # 2.3: 32 channels in the first block, doubling
}
"""``kidneyseg plan --preset paper``: the plan settings seed 002 states (patch 128^3 and batch 4
follow from the memory budget: give ``--memory-gb`` of a large GPU to get them)."""


def check_ct(image: Image) -> None:
    """Raise :class:`InputError` for a CT this pipeline cannot read as HU or as a volume.

    Checks: 3D; at least 2 voxels on every axis (a single slice cannot be resampled in 3D);
    intensities in HU (the 1st percentile, normally air at about -1000, must be below
    :data:`AIR_HU`: a 0..4095 volume stored without its rescale slope/intercept fails).
    """
    if image.ndim != 3:
        raise InputError(f"{image.source}: expected a 3D CT volume, got shape {image.shape}")
    if min(image.shape) < 2:
        raise InputError(f"{image.source}: a single slice ({image.shape}); kits-unet3d needs a 3D volume")
    a = np.asarray(image.array)
    step = max(1, int(round((a.size / 2_000_000) ** (1 / 3))))
    p1 = float(np.percentile(a[::step, ::step, ::step], 1))
    if p1 > AIR_HU:
        raise InputError(f"{image.source}: intensities do not look like HU (1st percentile {p1:g}, no air near "
                         "-1000); apply the rescale slope/intercept first")


def normalise(array: np.ndarray, plan: Plan) -> np.ndarray:
    """Clip and z-score (float32) as the plan says (see :class:`kidneyseg.planning.Plan`)."""
    a = np.asarray(array, np.float32)
    if plan.normalisation == "ct_clip_zscore":
        lo, hi = plan.clip
        return ((np.clip(a, lo, hi) - plan.mean) / plan.std).astype(np.float32)
    return zscore_percentile(a, constant_ok=True)


def regions_from_labels(labels: np.ndarray) -> np.ndarray:
    """KiTS labels ``(...)`` -> ``(3, ...)`` float32 regions kidney+masses, masses, tumour."""
    lab = np.asarray(labels)
    return np.stack([lab > 0, (lab == 2) | (lab == 3), lab == 2]).astype(np.float32)


def labels_from_regions(regions: np.ndarray) -> np.ndarray:
    """Nested boolean regions ``(3, ...)`` -> KiTS labels uint8 (1 kidney, 2 tumour, 3 cyst):
    masses count only inside kidney+masses, tumour only inside masses."""
    km = regions[0].astype(bool)
    masses = km & regions[1].astype(bool)
    tumour = masses & regions[2].astype(bool)
    out = km.astype(np.uint8)
    out[masses] = 3
    out[tumour] = 2
    return out


def prepare_image(image: Image, plan: Plan):
    """Input of the network: ``(canonical Image, reorientation, (1, 1, R, A, S) float32 tensor)``.

    Raises:
        InputError: see :func:`check_ct`.
    """
    check_ct(image)
    canon, reo = to_canonical(image)
    arr = resample_volume(np.asarray(canon.array, np.float32), canon.spacing_mm, plan.target_spacing_mm, order=3)
    return canon, reo, torch.from_numpy(normalise(arr, plan))[None, None]
