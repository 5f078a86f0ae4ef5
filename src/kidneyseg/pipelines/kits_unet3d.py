"""Pipeline ``kits-unet3d``: the nnU-Net-style 3D U-Net for kidney, tumour and cyst on
contrast CT (seed 002, Zang et al., KiTS21), configured from a dataset plan
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

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..arrays import largest_components
from ..inference.sliding_window import sliding_window_logits
from ..io import Image
from ..io.orientation import from_canonical
from ..labels import KITS
from ..planning import Plan
from ..specs.kits import REGIONS, KitsConfig, labels_from_regions, prepare_image
from .result import Result, side_volumes_ml, volumetric_result


def predict_regions(network: torch.nn.Module, x: torch.Tensor, plan: Plan, config: KitsConfig,
                    device: torch.device) -> torch.Tensor:
    """Sigmoid region probabilities ``(3, R, A, S)`` float32 on the plan's grid.

    :func:`kidneyseg.inference.sliding_window.sliding_window_logits`: windows of the plan's
    patch, overlap 0.5, Gaussian blending; with ``config.mirror_tta`` the logits of all 8
    mirrorings are averaged.
    """
    network.eval()
    logits = sliding_window_logits(network, x, plan.patch_size, device, config.sw_batch_size, 0.5,
                                   mirror=config.mirror_tta)
    return torch.sigmoid(logits[0]).float()


def keep_kidney_components(km: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` largest 26-connected components of the kidney+masses mask (scipy); ``keep``
    0 returns the mask unchanged (seed 002's no post-processing)."""
    if keep <= 0:
        return km
    return largest_components(km, keep, connectivity=3)


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
    name: str = "kits-unet3d"

    def disable_tta(self) -> None:
        """One sliding-window pass instead of the model's mirror test-time augmentation
        (``segment --no-tta``: 8 times fewer passes)."""
        self.config = self.config.replace(mirror_tta=False)

    @classmethod
    def load(cls, model: str | Path | None, device: str = "auto") -> "KitsUNetPipeline":
        """Load a model folder written by :func:`kidneyseg.training.kits.train_kits_unet3d`.

        Raises:
            InputError: no folder given (no CT model is shipped), or it is not a kits-unet3d
                model folder.
        """
        from ..models.folder import ModelFolder
        from ..models.store import resolve_device
        from ..models.unet import build_dynunet

        folder = ModelFolder.open(model, "kits-unet3d", none_given=(
            "--pipeline kits-unet3d: no model is shipped (no CT with masks here to train one); "
            "pass --model FOLDER from kidneyseg train --pipeline kits-unet3d"))
        plan = folder.config(Plan.from_dict, "plan")
        config = folder.config(KitsConfig.from_dict, "config")
        dev = resolve_device(device)
        net = folder.load_weights(build_dynunet(plan, 1, len(REGIONS)))
        net.to(dev).eval()
        folder = folder.path
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
        result.volumes_ml = {**side_volumes_ml(canon, sides.labels), **result.volumes_ml}
        result.seconds = time.perf_counter() - t0
        return result
