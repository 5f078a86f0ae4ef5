"""Pipeline ``unsupervised-cluster``: kidneys on MRI without any annotation or trained model
(seed 001), and the classical baselines in the same region of interest.

read -> RAS canonical -> N4 bias correction (2 iterations x 8 levels) -> [second sequence:
N4, rigid + B-spline registration onto the first, early fusion as a channel] -> kidney boxes
(threshold at the high-intensity mode, closing r5, opening r4, components, one box per side)
-> per box: z-score per channel, in-plane block mean to ``working_spacing_mm`` -> clustering
network optimised on the box (or Otsu / watershed) -> clusters near the bright seed -> back to the box's grid, surface voxels re-decided by
intensity -> component at the seed, holes filled per slice, kept within the selection radius of the seed -> right/left from the box's side of the body
midline -> input grid.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import InputError
from ..io import Image, check_volume, from_canonical, to_canonical
from ..labels import MR_KIDNEYS
from ..localize import detect_kidney_rois
from ..postprocess import body_midline_x_mm
from ..postprocess.clusters import clamp_to_seed, component_at_seed, refine_boundary, select_kidney_clusters
from ..specs.unsupervised import METHODS, Regions, UnsupervisedConfig, block_factors, upsample_mask
from ..training.clustering import optimise_clusters, optimise_clusters_by_slice, resolve_precision
from .result import Result, volumetric_result

log = logging.getLogger(__name__)

SINGLE_KIDNEY: dict[int, str] = {1: "kidney"}
"""Label map when ``expected_kidneys=1`` (a transplanted kidney has no side)."""


class UnsupervisedKidneyPipeline:
    """Unsupervised kidney segmentation and volumetry on 3D MRI (any contrast where the
    kidneys are among the brightest tissues: T2, contrast-enhanced T1).

    Build with :meth:`load`; call :meth:`segment` per image.
    """

    name = "unsupervised-cluster"
    keep_largest: bool = True  # each box keeps one component anyway; --keep-all-components is refused

    def __init__(self, config: UnsupervisedConfig = UnsupervisedConfig(), device: str = "auto") -> None:
        import torch

        self.config = config
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.keep_largest = True  # interface of segment_files; each box keeps one component anyway

    @classmethod
    def load(cls, model: str | None = None, device: str = "auto",
             config: UnsupervisedConfig | None = None) -> "UnsupervisedKidneyPipeline":
        """Build the pipeline. It has no weights: ``model`` must be ``None``.

        Raises:
            InputError: a model was given.
        """
        if model is not None:
            raise InputError(f"--model {model}: the unsupervised-cluster pipeline has no model to load")
        return cls(config or UnsupervisedConfig(), device)

    @property
    def label_map(self) -> dict[int, str]:
        return dict(MR_KIDNEYS) if self.config.roi.expected_kidneys == 2 else dict(SINGLE_KIDNEY)

    def _segment_box(self, channels: list[np.ndarray], seed: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, dict]:
        from ..models.baselines import otsu_kidney, watershed_kidney

        cfg = self.config
        slice_axis = int(np.argmax(spacing))
        if cfg.method == "otsu":
            return otsu_kidney(channels[0], seed, slice_axis), {}
        if cfg.method == "watershed":
            return watershed_kidney(channels[0], seed, spacing), {}
        from skimage.transform import downscale_local_mean

        factors = block_factors(spacing, cfg.working_spacing_mm)
        x = np.stack([(c - c.mean()) / (c.std() + 1e-6) for c in channels]).astype(np.float32)
        small = np.stack([downscale_local_mean(c, factors) for c in x]).astype(np.float32)
        if cfg.method == "cluster3d":
            res = optimise_clusters(small, cfg.cluster, self.device)
            labels, iterations, converged = res.labels, res.iterations, res.converged
        else:  # cluster2d: each slice along the slice axis on its own
            labels, iterations, converged = optimise_clusters_by_slice(small, cfg.cluster, self.device, slice_axis)
        info = {"iterations": iterations, "converged": bool(converged)}
        if not converged:
            return np.zeros(seed.shape, dtype=bool), info
        # select at the working resolution, then bring the kidney mask back to the box's grid
        small_seed = downscale_local_mean(seed.astype(np.float32), factors) >= 0.5
        small_spacing = tuple(s * f for s, f in zip(spacing, factors))
        small_mask, chosen = select_kidney_clusters(labels, small_seed, small_spacing, cfg.selection_radius_mm,
                                                    min_fraction=cfg.selection_min_fraction,
                                                    slice_axis=slice_axis, intensity=small[0],
                                                    min_contrast=cfg.selection_min_contrast,
                                                    seed_share=cfg.selection_seed_share if cfg.clamp_to_seed else None)
        mask = refine_boundary(upsample_mask(small_mask, factors, seed.shape), x[0], seed, spacing, factors,
                               cfg.selection_radius_mm, cfg.selection_min_contrast)
        mask = component_at_seed(mask, seed, slice_axis)
        if cfg.clamp_to_seed:
            mask = clamp_to_seed(mask, seed, spacing, cfg.selection_radius_mm, slice_axis)
        info["clusters"] = int(np.unique(labels).size)
        info["kidney_clusters"] = len(chosen)
        return mask, info

    def _segment_boxes(self, boxes: list[tuple[list[np.ndarray], np.ndarray]],
                       spacing: tuple[float, ...]) -> list[tuple[np.ndarray, dict]]:
        """:meth:`_segment_box` for each ``(channels, seed)``; on CPU, a clustering method's
        boxes run side by side (:func:`kidneyseg.inference.cpu.map_splitting_threads`: each box's
        network is too small to keep two cores busy; the masks are the same as one after the
        other, the initial weights being drawn under a lock in
        :func:`~kidneyseg.training.clustering.optimise_clusters`)."""
        from ..inference.cpu import map_splitting_threads

        side_by_side = self.device.type == "cpu" and self.config.method in ("cluster3d", "cluster2d")
        return map_splitting_threads(lambda item: self._segment_box(item[0], item[1], spacing), boxes, side_by_side)

    def regions(self, image: Image, secondary: Image | None = None) -> Regions:
        """The steps before any clustering: check, RAS, N4, the secondary image registered
        and fused as a channel, the kidney boxes. No label is used (the ROI benchmark scores
        these boxes against expert masks).

        Args / Raises: as :meth:`segment`.
        """
        from ..preprocess.bias import n4_bias_correct

        cfg = self.config
        image = check_volume(image)
        if image.array.dtype != np.float32:
            image = image.with_array(np.asarray(image.array, dtype=np.float32))
        canon, reo = to_canonical(image)
        corrected, _ = n4_bias_correct(canon, cfg.n4_iterations, cfg.n4_fitting_levels)
        channels = [corrected.array]
        if secondary is not None:
            from ..preprocess.registration import register_to

            secondary = check_volume(secondary, "secondary image")
            sec_c, _ = to_canonical(secondary.with_array(np.asarray(secondary.array, dtype=np.float32)))
            sec_corr, _ = n4_bias_correct(sec_c, cfg.n4_iterations, cfg.n4_fitting_levels)
            channels.append(register_to(corrected, sec_corr, cfg.registration_metric,
                                        max_samples=cfg.registration_max_samples).image.array)
        midline = body_midline_x_mm(canon.array, canon.affine)
        found = detect_kidney_rois(corrected.array, canon.affine, cfg.roi, midline)
        return Regions(image, canon, reo, channels, found)

    def segment(self, image: Image, secondary: Image | None = None) -> Result:
        """Segment one 3D image, optionally with a second sequence of the same exam.

        Args:
            image: 3D :class:`~kidneyseg.io.Image`, any orientation (the primary sequence;
                the paper used DCE, T2 works where kidneys are bright).
            secondary: optional 3D image of the same patient and session, any grid; it is
                registered to ``image`` (rigid + B-spline, ``registration_metric``) and added
                as a second channel.

        Returns:
            :class:`~kidneyseg.pipelines.Result` on the input's grid. QC flags: ``no_roi``
            (no bright component where a kidney can be: empty mask), ``not_converged`` (the
            clustering of a box hit ``max_iterations``: that kidney left empty),
            ``roi_<side>_mm`` (box corners, world RAS+ mm), ``iterations_<side>``,
            ``cluster_dtype`` (the clustering's compute dtype, ``ClusterConfig.precision``).

        Raises:
            InputError: not 3D, NaN/Inf voxels, constant, singular affine, or a secondary
                image whose registration fails.
            GeometryError: the output grid would differ from the input's (a bug).
        """
        t0 = time.perf_counter()
        cfg = self.config
        reg = self.regions(image, secondary)
        image, canon, reo, channels, found = reg.image, reg.canonical, reg.reorientation, reg.channels, reg.found
        spacing = canon.spacing_mm
        labels_c = np.zeros(canon.shape, dtype=np.uint8)
        qc: dict[str, object] = {"no_roi": not found.rois, "not_converged": False}
        value = {"right": 1, "left": 2, "single": 1}
        if cfg.method in ("cluster3d", "cluster2d") and found.rois:
            qc["cluster_dtype"] = str(resolve_precision(cfg.cluster.precision, self.device)).removeprefix("torch.")
        boxes = self._segment_boxes([([c[roi.slices] for c in channels], roi.seed) for roi in found.rois], spacing)
        for roi, (mask, info) in zip(found.rois, boxes):
            labels_c[roi.slices][mask] = value[roi.side]
            qc[f"roi_{roi.side}_mm"] = " ".join(f"{a:.1f}:{b:.1f}" for a, b in zip(roi.lo_world_mm, roi.hi_world_mm))
            if "iterations" in info:
                qc[f"iterations_{roi.side}"] = info["iterations"]
                if not info["converged"]:
                    qc["not_converged"] = True
                    log.warning("%s: the clustering of the %s box did not converge in %d iterations; "
                                "that kidney is left empty", image.name, roi.side, info["iterations"])
        if qc["no_roi"]:
            log.warning("%s: no kidney region of interest found (threshold %.1f); the mask is empty",
                        image.name, found.threshold)
        mask_arr = from_canonical(labels_c, reo)
        kidney_count = int(sum(bool((labels_c == v).any()) for v in self.label_map))
        qc = {"kidney_count": kidney_count, "empty": kidney_count == 0, "laterality_source": "roi_side", **qc}
        return volumetric_result(image, mask_arr, self.label_map, qc, t0)


__all__ = ["METHODS", "SINGLE_KIDNEY", "Regions", "UnsupervisedConfig", "UnsupervisedKidneyPipeline"]
