"""Pipeline ``c2f-cascade``: coarse-to-fine kidney segmentation and a two-model tumour stage
on contrast CT (seed 004, Zhang et al., KiTS19).

All work is done on the canonical (RAS) array resampled to one voxel size, seed 004's
3 x 0.7816 x 0.7816 mm (``spacing_mm`` is given along R, A, S: (0.7816, 0.7816, 3.0)).
Axial slices are ``array[:, :, k]`` (R x A), sagittal slices ``array[i, :, :]`` (A x S).

Kidney stage (seed 004, section 1):

1. **coarse model C**: every axial slice, padded to a square and resized to 128 x 128, goes
   through a 2D U-Net; the slice predictions are resized back and stacked: the 3D coarse mask
   ``S_C`` (kidney and masses as one foreground class);
2. **abnormal detection** (section 1.2, eq. 5): 26-connected components of ``S_C``; those of
   at least ``kidney_threshold_ml`` (seed 004: 10,000 voxels at 3 x 0.78 x 0.78 mm, 18.3 mL)
   are kidneys. Two kidneys: normal, ``S_C`` guides the fine stage. Any other count: abnormal;
3. **correction model A** (abnormal cases only): every sagittal slice is cropped to 256 (A) x
   64 (S) voxels around the sagittal centroid of ``S_C`` (volume centre when ``S_C`` is empty),
   predicted by a third 2D U-Net and pasted back (zero outside): the guide mask ``M``;
4. **fine model F**: for each kidney of ``M``, the axial slices of its extent (+-2) are cropped
   to 160 x 160 voxels around its axial centroid, predicted, and pasted back (maximum where
   crops overlap): ``S_F``; components of ``S_F`` that touch no kidney of ``M`` are dropped.

Tumour stage (section 2):

5. **3D FCN** (a MONAI U-Net with two poolings) slides over the box of ``S_F`` padded by
   ``tumour_box_margin`` voxels (seed 004: a frame of 30), MONAI ``sliding_window_inference``;
6. **two-channel 2D CNN** T (CT slice + ``S_F``) on the fine crops. When the 3D model detects at
   least ``tumour_min_voxels`` voxels, the tumour is its detections that T confirms (T "used
   within detected tumor region ... to reduce false positive rate"); otherwise T's prediction
   inside ``S_F`` (seed 004, section 2.5: T searches the kidney);
7. tumour components not connected to ``S_F`` are dropped (section 2.4).

Labels (KiTS19's, the data seed 004 used): 1 kidney, 2 tumour. KiTS21/23 cysts are trained as
kidney (foreground of the kidney stage, not tumour). The label map goes back to the input grid
by nearest neighbour. Volumes: ``kidney_right_ml`` / ``kidney_left_ml`` are each side's kidney
with its tumour (world x decides the side), ``kidney_ml`` and ``tumor_ml`` the labels.
Choices seed 004 leaves open (normalisation, optimiser, augmentation, 3D patch): :class:`C2FConfig`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ..arrays import crop_around, padded_box
from ..inference.sliding_window import sliding_window_logits
from ..io import Image
from ..io.orientation import from_canonical
from ..specs.c2f import (CONNECTIVITY_26, LABELS, STAGES, C2FConfig, build_network, centroid_index, crop_axial, fine_crops,
                         kidney_components, paste_max, predict_2d, prepare_ct, square_resize, square_restore)
from .result import Result, side_volumes_ml, volumetric_result


@dataclass
class C2FCascadePipeline:
    """A loaded ``c2f-cascade`` model folder (``config.json`` and the five ``<stage>.pt``)."""

    networks: dict[str, torch.nn.Module]
    config: C2FConfig
    device: torch.device
    folder: Path
    label_map: dict[int, str] = field(default_factory=lambda: dict(LABELS))
    keep_largest: bool = False  # the cascade's own component logic; --keep-all-components is refused
    name: str = "c2f-cascade"

    @classmethod
    def load(cls, model: str | Path | None, device: str = "auto") -> "C2FCascadePipeline":
        """Load a folder written by :func:`kidneyseg.training.c2f.train_c2f_cascade`.

        Raises:
            InputError: no folder (no CT model is shipped), not a c2f-cascade folder, or a
                stage's weights are missing.
        """
        from ..models.folder import ModelFolder
        from ..models.store import resolve_device

        folder = ModelFolder.open(model, "c2f-cascade", weights=(), none_given=(
            "--pipeline c2f-cascade: no model is shipped (no CT with masks here to train one); "
            "pass --model FOLDER from kidneyseg train --pipeline c2f-cascade"))
        config = folder.config(C2FConfig.from_dict, "config")
        dev = resolve_device(device)
        nets = {}
        for stage in STAGES:
            net = folder.load_weights(build_network(stage, config), f"{stage}.pt", key="state")
            nets[stage] = net.to(dev).eval()
            if stage != "tumour3d":
                nets[stage] = nets[stage].to(memory_format=torch.channels_last)
        return cls(nets, config, dev, folder.path)

    def coarse(self, vol: np.ndarray) -> np.ndarray:
        """``S_C``: boolean (R, A, S), every axial slice through C at ``coarse_size``."""
        cfg = self.config
        x = square_resize(np.moveaxis(vol, 2, 0), cfg.coarse_size)
        p = square_restore(predict_2d(self.networks["coarse"], x, cfg.slice_batch, self.device), vol.shape[:2])
        return np.moveaxis(p[:, 0].numpy() > 0.5, 0, 2)

    def correct(self, vol: np.ndarray, coarse: np.ndarray) -> np.ndarray:
        """``M`` of an abnormal case: sagittal crops around the sagittal centroid of ``coarse``
        through A, pasted back (zero outside the crops)."""
        cfg = self.config
        _, a, s = centroid_index(coarse) if coarse.any() else tuple(n // 2 for n in vol.shape)
        x = torch.from_numpy(np.stack([crop_around(vol[i], (a, s), cfg.correction_size, 0.0)
                                       for i in range(vol.shape[0])]))[:, None]
        p = predict_2d(self.networks["correction"], x, cfg.slice_batch, self.device)[:, 0].numpy()
        out = np.zeros(vol.shape, np.float32)
        for i in range(vol.shape[0]):
            paste_max(out[i], p[i], (a, s))
        return out > 0.5

    def fine(self, vol: np.ndarray, crops) -> np.ndarray:
        """``S_F`` probability (R, A, S) float32 from the axial crops of each guide kidney."""
        cfg = self.config
        out = np.zeros(vol.shape, np.float32)
        for centre, ks in crops:
            x = torch.from_numpy(crop_axial(vol, centre, ks, cfg.fine_size))[:, None]
            p = predict_2d(self.networks["fine"], x, cfg.slice_batch, self.device)[:, 0].numpy()
            for j, k in enumerate(ks):
                paste_max(out[:, :, k], p[j], centre)
        return out

    def tumour(self, vol: np.ndarray, kidney: np.ndarray, crops) -> tuple[np.ndarray, str]:
        """Tumour mask (R, A, S) and its source (``"3d+2d"``, ``"2d"`` or ``"none"``)."""
        cfg = self.config
        if not kidney.any():
            return np.zeros(vol.shape, bool), "none"
        box = padded_box(kidney, cfg.tumour_box_margin)
        x = torch.from_numpy(np.ascontiguousarray(vol[box]))[None, None]
        logits = sliding_window_logits(self.networks["tumour3d"], x, cfg.tumour_patch, self.device, cfg.batch_3d)
        det = np.zeros(vol.shape, bool)
        det[box] = (logits[0, 1] > logits[0, 0]).numpy()
        t2d = np.zeros(vol.shape, np.float32)
        km = kidney.astype(np.float32)
        for centre, ks in crops:
            x2 = np.stack([crop_axial(vol, centre, ks, cfg.fine_size), crop_axial(km, centre, ks, cfg.fine_size)], 1)
            p = predict_2d(self.networks["tumour2d"], torch.from_numpy(x2), cfg.slice_batch, self.device)[:, 0].numpy()
            for j, k in enumerate(ks):
                paste_max(t2d[:, :, k], p[j], centre)
        t2d = t2d > 0.5
        if det.sum() >= cfg.tumour_min_voxels:
            tum, source = det & t2d, "3d+2d"
        else:  # no 3D detection: T searches the kidney (seed 004, section 2.5)
            tum, source = t2d & kidney, "2d"
        # keep the lesions connected to the kidney (section 2.4)
        lab, n = ndimage.label(tum, structure=CONNECTIVITY_26)
        if n:
            touching = np.unique(lab[ndimage.binary_dilation(kidney, structure=CONNECTIVITY_26) & (lab > 0)])
            tum = np.isin(lab, touching[touching > 0])
        return tum, source if tum.any() else "none"

    def segment(self, image: Image) -> Result:
        """Segment one CT volume.

        Args:
            image: 3D CT in HU, any orientation and spacing.

        Returns:
            :class:`Result`: labels 1 kidney, 2 tumour on the input's grid; volumes (module
            docstring); QC ``coarse_kidney_count``, ``abnormal``, ``kidney_count``,
            ``tumour_source``, ``laterality_source``, ``empty``, ``touches_border``.

        Raises:
            InputError: see :func:`kidneyseg.specs.kits.check_ct`.
        """
        from ..postprocess.kidneys import assign_kidneys, body_midline_x_mm

        t0 = time.perf_counter()
        cfg = self.config
        canon, reo, vol = prepare_ct(image, cfg)
        voxel_ml = float(np.prod(cfg.spacing_mm)) / 1000.0
        s_c = self.coarse(vol)
        lab_c, ids_c = kidney_components(s_c, voxel_ml, cfg.kidney_threshold_ml)
        abnormal = len(ids_c) != 2
        guide_lab, guide_ids = (kidney_components(self.correct(vol, s_c), voxel_ml, cfg.kidney_threshold_ml)
                                if abnormal else (lab_c, ids_c))
        crops = fine_crops(guide_ids, guide_lab, cfg.fine_size)
        s_f = self.fine(vol, crops) > 0.5
        lab_f, n_f = ndimage.label(s_f, structure=CONNECTIVITY_26)
        if n_f:
            hit = np.unique(lab_f[np.isin(guide_lab, guide_ids) & (lab_f > 0)])
            s_f = np.isin(lab_f, hit[hit > 0])
        tum, source = self.tumour(vol, s_f, crops)
        work = s_f.astype(np.uint8)
        work[tum] = 2
        t = torch.from_numpy(work)[None, None].float()
        labels = torch.nn.functional.interpolate(t, size=canon.shape, mode="nearest-exact")[0, 0].numpy().astype(np.uint8)
        sides = assign_kidneys((labels > 0).astype(np.uint8), canon.affine, {1: "kidney_right", 2: "kidney_left"},
                               midline_x_mm=body_midline_x_mm(np.asarray(canon.array), canon.affine),
                               keep_largest=False)
        qc = {"coarse_kidney_count": len(ids_c), "abnormal": abnormal, "kidney_count": sides.kidney_count,
              "tumour_source": source, "laterality_source": sides.laterality_source, "empty": not bool(labels.any())}
        result = volumetric_result(image, from_canonical(labels, reo), self.label_map, qc, t0)
        result.volumes_ml = {**side_volumes_ml(canon, sides.labels), **result.volumes_ml}
        result.seconds = time.perf_counter() - t0
        return result
