"""Pipeline ``em-unet3d``: EM localisation, then a small 3D U-Net on the crop (seed 000).

Steps for one volume (sections II.B-II.E of seed 000):

1. reorient to RAS+ (:func:`kidneyseg.io.to_canonical`) and move the slice axis (largest
   spacing) last;
2. localise: ``"em"`` (:mod:`kidneyseg.localize.em` on the localisation map: FA for
   diffusion data, the image itself otherwise), ``"body"`` (the largest connected
   component of an Otsu body mask: the paper's "CC" row) or ``"none"`` (whole field of view:
   the paper's plain 3D U-Net);
3. optionally super-resolve the network input through-plane
   (:mod:`kidneyseg.preprocess.super_resolution`);
4. crop the box on every slice, z-score (0.5/99.5 percentile clip), resize to
   ``input_size`` (64 x 64 x 16; 64 x 64 x 64 after super-resolution);
5. a MONAI 3D U-Net with half the filters of Cicek et al.'s 3D U-Net (16-32-64-128 instead
   of 32-64-128-256), one output channel (kidney), trained with the Dice loss;
6. the kidney probability resized back to the box and pasted on the full grid (exact
   shape and affine), thresholded at 0.5, split into right and left by world position
   (:func:`kidneyseg.postprocess.assign_kidneys`), mapped back to the input orientation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..io import Image, check_volume
from ..labels import MR_KIDNEYS
from ..localize.em import Box
from ..specs.em_unet import (PIPELINE, SR_WEIGHTS, WEIGHTS, EMUNetConfig, Prepared, build_network, find_box,
                             network_input, prepare)
from .result import Result, volumetric_result

log = logging.getLogger(__name__)


class EMUNetPipeline:
    """Trained ``em-unet3d`` model: build with :meth:`load`, call :meth:`segment` per volume."""

    name = PIPELINE
    keep_largest: bool = True
    label_map: dict[int, str] = MR_KIDNEYS  # replaced by a copy per instance

    def __init__(self, config: EMUNetConfig, network: torch.nn.Module, sr=None, device: str = "auto") -> None:
        from ..models.store import resolve_device

        self.config = config
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.sr = sr
        self.keep_largest = True
        self.label_map = dict(MR_KIDNEYS)

    @classmethod
    def load(cls, model: str | Path | None = None, device: str = "auto") -> "EMUNetPipeline":
        """Load a model folder written by :func:`kidneyseg.training.em_unet.train_em_unet`.

        Raises:
            InputError: no ``--model`` (nothing is shipped for this pipeline), or a folder
                without ``model.pt``/``config.json`` or with another pipeline's config.
        """
        from ..models.folder import ModelFolder

        folder = ModelFolder.open(model, PIPELINE, weights=(WEIGHTS,))
        config = folder.config(EMUNetConfig.from_dict)
        net = folder.load_weights(build_network(config), WEIGHTS)
        sr = None
        if config.super_resolution > 1:
            from ..preprocess.super_resolution import ThroughPlaneSR

            sr = ThroughPlaneSR.from_state(folder.state(SR_WEIGHTS))
        return cls(config, net, sr, device)

    @torch.inference_mode()
    def probabilities(self, prep: Prepared, box: Box) -> np.ndarray:
        """Kidney probability on the working grid ``(X, Y, S)`` (zero outside ``box``)."""
        from ..preprocess.crop import uncrop
        from ..preprocess.super_resolution import to_original_grid

        cfg = self.config
        array = prep.array
        if cfg.super_resolution > 1:
            array = self.sr.apply(array, 2, self.device)
            box = Box(box.lo, box.hi[:2] + (array.shape[2],), 2)
        x = torch.from_numpy(network_input(array, box, cfg))[None, None].to(self.device)
        prob = torch.sigmoid(self.network(x))[0, 0].float().cpu()
        full = uncrop(prob, box, array.shape)
        if cfg.super_resolution > 1:
            full = to_original_grid(full, cfg.super_resolution, 2)
        return full

    def segment(self, image: Image, secondary: Image | None = None) -> Result:
        """Segment one 3D volume.

        Args:
            image: 3D network input (MD map, or the sequence the model was trained on), any
                orientation.
            secondary: optional localisation map on the same grid (FA for diffusion data);
                default: ``image`` itself.

        Returns:
            :class:`~kidneyseg.pipelines.Result` on the input's grid; QC flags
            ``no_kidney_class`` (the EM classes chosen as kidney are empty: the mask is left
            empty, never a crop of another region), ``box_mm`` (crop corners, RAS+ mm).

        Raises:
            InputError: not 3D, NaN/Inf, constant, a localisation map on another grid.
            GeometryError: the output grid would differ from the input's (a bug).
        """
        from ..postprocess import assign_kidneys, body_midline_x_mm

        t0 = time.perf_counter()
        image = check_volume(image)
        image = image.with_array(np.asarray(image.array, dtype=np.float32))
        if secondary is not None:
            secondary = check_volume(secondary, "localisation map")
        prep = prepare(image, secondary)
        box, _ = find_box(prep, self.config)
        qc: dict[str, object] = {"no_kidney_class": box is None}
        labels = np.zeros(prep.array.shape, dtype=np.uint8)
        if box is None:
            log.warning("%s: the EM classes taken as kidney are empty; no crop, the mask is empty", image.name)
        else:
            lo, hi = box.world_mm(prep.affine)
            qc["box_mm"] = " ".join(f"{a:.1f}:{b:.1f}" for a, b in zip(lo, hi))
            labels = (self.probabilities(prep, box) > self.config.threshold).astype(np.uint8)
        midline = body_midline_x_mm(prep.array, prep.affine)
        assigned = assign_kidneys(labels, prep.affine, self.label_map, midline_x_mm=midline,
                                  keep_largest=self.keep_largest)
        qc = {"kidney_count": assigned.kidney_count, "empty": bool(assigned.kidney_count == 0),
              "laterality_source": assigned.laterality_source, **qc}
        return volumetric_result(image, prep.undo(assigned.labels), self.label_map, qc, t0, prep.undo(labels))

__all__ = ["EMUNetPipeline"]
