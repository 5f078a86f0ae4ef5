"""Pipeline ``kits-unet3d``: the nnU-Net-style 3D U-Net for kidney, tumour and cyst on
contrast CT (seed 002, Zhao et al., KiTS21), configured from a dataset plan
(:mod:`kidneyseg.planning`).

Steps (seed 002, section 2):

1. reorient to RAS (:func:`kidneyseg.io.to_canonical`), check the intensities are HU;
2. resample to the plan's spacing (1.99 mm isotropic in the paper): third-order spline for
   the image (``scipy.ndimage.zoom``, order 3), nearest neighbour for labels;
3. normalise: clip to the 0.5th / 99.5th percentile and z-score, per case (the paper) or with
   the dataset's foreground statistics (nnU-Net's CT scheme), as the plan says;
4. MONAI ``DynUNet`` from the plan (32 base filters doubling per level, deep supervision);
   three sigmoid outputs for the KiTS regions kidney+masses, masses, tumour;
5. sliding-window inference with half-patch overlap and Gaussian weighting (MONAI
   ``sliding_window_inference``), optional mirror test-time augmentation;
6. region probabilities resampled back to the input grid (trilinear), thresholded at 0.5 and
   nested (masses inside kidney+masses, tumour inside masses); the kidney+masses components are
   reduced to the kidneys (at most two, plus anything connected to them) and named right/left
   in world coordinates.

Output labels are KiTS's: 1 kidney, 2 tumor, 3 cyst. Volumes: ``kidney_right_ml`` and
``kidney_left_ml`` are each side's kidney *including* its masses (KiTS's kidney+masses
region), ``tumor_ml`` and ``cyst_ml`` the lesions, ``kidney_ml`` the kidney parenchyma.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from ..io import Image, to_canonical
from ..io.orientation import from_canonical
from ..labels import KITS
from ..planning import Plan
from .result import Result, volumetric_result

REGIONS = ("kidney_and_masses", "masses", "tumor")
"""Network output channels (KiTS21/23 hierarchical evaluation regions)."""

AIR_HU = -200.0
"""A CT in HU has air (about -1000); if the 1st percentile is above this, it is not HU."""


@dataclass(frozen=True)
class KitsConfig:
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
            third only if ``n_kidneys_max`` is 3).
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KitsConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes) -> "KitsConfig":
        return replace(self, **changes)


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


def resample_volume(array: np.ndarray, spacing_mm, target_mm, order: int) -> np.ndarray:
    """Resample an RAS-ordered array to ``target_mm`` keeping the field of view.

    ``scipy.ndimage.zoom`` with ``grid_mode=True`` (voxel edges of the two grids coincide,
    as ITK/SimpleITK do for a same-extent resampling); ``order`` 3 (cubic spline) for images,
    0 (nearest) for labels. Output shape: ``round(shape * spacing / target)``, at least 1.
    """
    shape = np.asarray(array.shape, float)
    new = np.maximum(np.round(shape * np.asarray(spacing_mm, float) / np.asarray(target_mm, float)), 1)
    zoom = new / shape
    if np.allclose(zoom, 1):
        return np.asarray(array)
    return ndimage.zoom(array, zoom, order=order, mode="nearest" if order else "grid-constant",
                        grid_mode=True, prefilter=order > 1)


def normalise(array: np.ndarray, plan: Plan) -> np.ndarray:
    """Clip and z-score (float32) as the plan says (see :class:`kidneyseg.planning.Plan`)."""
    a = np.asarray(array, np.float32)
    if plan.normalisation == "ct_clip_zscore":
        lo, hi = plan.clip
        return ((np.clip(a, lo, hi) - plan.mean) / plan.std).astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    a = np.clip(a, lo, hi)
    return ((a - a.mean()) / max(float(a.std()), 1e-6)).astype(np.float32)


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


def predict_regions(network: torch.nn.Module, x: torch.Tensor, plan: Plan, config: KitsConfig,
                    device: torch.device) -> torch.Tensor:
    """Sigmoid region probabilities ``(3, R, A, S)`` float32 on the plan's grid.

    Sliding window (MONAI ``sliding_window_inference``): windows of the plan's patch, overlap
    0.5 (stride half the patch), Gaussian blending; volumes smaller than the patch are padded
    by MONAI and cropped back. With ``config.mirror_tta`` the logits of all 8 mirrorings are
    averaged.
    """
    from monai.inferers import sliding_window_inference

    network.eval()
    flips = [()] + ([(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if config.mirror_tta else [])
    total = None
    with torch.inference_mode():
        for f in flips:
            xi = torch.flip(x, f) if f else x
            logits = sliding_window_inference(xi.to(device), plan.patch_size, config.sw_batch_size, network,
                                              overlap=0.5, mode="gaussian", sw_device=device, device="cpu")
            logits = torch.flip(logits, f) if f else logits
            total = logits if total is None else total + logits
    return torch.sigmoid(total[0] / len(flips)).float()


def keep_kidney_components(km: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` largest 26-connected components of the kidney+masses mask (scipy)."""
    lab, n = ndimage.label(km, structure=np.ones((3, 3, 3), bool))
    if n <= keep:
        return km
    sizes = np.bincount(lab.ravel())[1:]
    kept = np.argsort(sizes)[::-1][:keep] + 1
    return np.isin(lab, kept)


@dataclass
class KitsUNetPipeline:
    """A loaded ``kits-unet3d`` model (folder with ``model.pt``, ``config.json``, ``plan.json``)."""

    network: torch.nn.Module
    plan: Plan
    config: KitsConfig
    device: torch.device
    folder: Path
    label_map: dict[int, str] = field(default_factory=lambda: dict(KITS))
    keep_largest: bool = True

    @classmethod
    def load(cls, model: str | Path | None, device: str = "auto") -> "KitsUNetPipeline":
        """Load a model folder written by :func:`kidneyseg.training.kits.train_kits_unet3d`.

        Raises:
            InputError: no folder given (no CT model is shipped), or it is not a kits-unet3d
                model folder.
        """
        from ..models.store import resolve_device
        from ..models.unet import build_dynunet

        if model is None:
            raise InputError("--pipeline kits-unet3d: no model is shipped (no CT with masks here to train one); "
                             "pass --model FOLDER from kidneyseg train --pipeline kits-unet3d")
        folder = Path(model)
        cfg_path, weights = folder / "config.json", folder / "model.pt"
        if not cfg_path.is_file() or not weights.is_file():
            raise InputError(f"{folder}: not a kits-unet3d model folder (needs config.json and model.pt)")
        saved = json.loads(cfg_path.read_text())
        if saved.get("pipeline") != "kits-unet3d":
            raise InputError(f"{cfg_path}: pipeline {saved.get('pipeline')!r}, not kits-unet3d")
        plan = Plan.from_dict(saved["plan"])
        config = KitsConfig.from_dict(saved["config"])
        dev = resolve_device(device)
        net = build_dynunet(plan, 1, len(REGIONS))
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.to(dev).eval()
        return cls(net, plan, config, dev, folder)

    def segment(self, image: Image) -> Result:
        """Segment one CT volume.

        Args:
            image: 3D CT in HU, any orientation and spacing.

        Returns:
            :class:`Result` with the KiTS label map on the input's grid, volumes in mL
            (module docstring) and QC flags ``kidney_count``, ``laterality_source``,
            ``empty``, ``touches_border``.

        Raises:
            InputError: see :func:`check_ct`.
        """
        from ..postprocess.kidneys import assign_kidneys, body_midline_x_mm

        t0 = time.perf_counter()
        canon, reo, x = prepare_image(image, self.plan)
        probs = predict_regions(self.network, x, self.plan, self.config, self.device)
        # one region at a time: a full-size float copy of all three would be 12 bytes per voxel
        regions = np.stack([(torch.nn.functional.interpolate(probs[None, None, c], size=canon.shape, mode="trilinear",
                                                             align_corners=False)[0, 0] > self.config.threshold).numpy()
                            for c in range(probs.shape[0])])
        if self.keep_largest:
            regions[0] = keep_kidney_components(regions[0], self.config.keep_components)
        labels = labels_from_regions(regions)
        sides = assign_kidneys((labels > 0).astype(np.uint8), canon.affine, {1: "kidney_right", 2: "kidney_left"},
                               midline_x_mm=body_midline_x_mm(np.asarray(canon.array), canon.affine),
                               keep_largest=False)
        out = from_canonical(labels, reo)
        result = volumetric_result(image, out, self.label_map,
                                   {"kidney_count": sides.kidney_count, "laterality_source": sides.laterality_source,
                                    "empty": not bool(labels.any())}, t0)
        voxel_ml = float(np.prod(canon.spacing_mm)) / 1000.0
        result.volumes_ml = {"kidney_right_ml": float((sides.labels == 1).sum()) * voxel_ml,
                             "kidney_left_ml": float((sides.labels == 2).sum()) * voxel_ml,
                             **{k: v for k, v in result.volumes_ml.items()}}
        result.seconds = time.perf_counter() - t0
        return result
