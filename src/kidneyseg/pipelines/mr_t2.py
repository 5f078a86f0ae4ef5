"""Pipeline ``mr-t2-unet``: kidneys on T2-weighted abdominal MRI with a 2.5D U-Net.

read -> RAS canonical -> (body-median clip) + percentile clip + z-score -> in-plane resampling
to the model's spacing -> slice-wise U-Net (each slice with its neighbours as channels; the
model folder's ``inference.json`` may ask for shifted / mirrored passes, averaged) ->
probabilities back to the canonical grid -> argmax or kidney-probability threshold ->
components ranked by their core (voxels >= 5 mm inside), one per side of the body midline,
named left/right by world x -> input grid.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import InputError
from ..inference import Prepared, predict_labels
from ..io import Image, check_volume, from_canonical
from ..io.orientation import PLANE_AXES
from ..models.store import ModelBundle, load_model
from ..postprocess import assign_kidneys, body_midline_x_mm
from ..postprocess.kidneys import split_at_necks
from ..postprocess.quality import member_dice, outside_range, uncertain_fraction
from ..preprocess.modality import ct_evidence
from .result import Result, volumetric_result


CORE_DEPTH_MM = 5.0
"""Kidney components are ranked by their voxels at least this deep (mm), not by voxel count
(:func:`kidneyseg.postprocess.assign_kidneys`); chosen 2026-12-02 by cross-validation
(benchmarks/README.md, "Component ranking by core")."""


class MRKidneyPipeline:
    """Left/right kidney segmentation and volumetry on 3D MRI.

    Build with :meth:`load`; call :meth:`segment` per image.
    """

    name = "mr-t2-unet"
    keep_largest: bool = True
    allow_ct: bool = False
    member_agreement: bool = False
    """Run an ensemble's networks one after the other and report their agreement per kidney
    (``member_dice_right`` / ``member_dice_left``); a single network has none."""

    def __init__(self, bundle: ModelBundle, keep_largest: bool = True,
                 core_depth_mm: float | None = CORE_DEPTH_MM, allow_ct: bool = False) -> None:
        self.bundle = bundle
        self.keep_largest = keep_largest
        self.core_depth_mm = core_depth_mm  # component ranking (assign_kidneys); None = voxel count
        self.allow_ct = allow_ct  # segment an image that looks like CT anyway (kidneyseg segment --allow-ct)

    @classmethod
    def load(cls, model: str | None = None, device: str = "auto", pipeline: str = "mr-t2-unet") -> "MRKidneyPipeline":
        """Load the shipped model (``model=None``) or a local model folder, for ``pipeline``
        (``mr-t2-unet`` or ``mr-multiprotocol-unet``, which share this class)."""
        bundle = load_model(model, device, pipeline)
        if bundle.inference.kidney_threshold_low_confidence is not None and bundle.config.kidney_classes != 1:
            raise InputError(f"{bundle.folder}: inference.json kidney_threshold_low_confidence needs a model with one "
                             f"kidney class (this one has {bundle.config.kidney_classes})")
        pipe = cls(bundle)
        pipe.name = pipeline
        return pipe

    def disable_tta(self) -> None:
        """Use one plain network pass (keep the model's decision threshold): faster."""
        self.bundle = dataclasses.replace(self.bundle, inference=self.bundle.inference.without_tta())

    @property
    def label_map(self) -> dict[int, str]:
        return self.bundle.config.label_map

    def segment(self, image: Image) -> Result:
        """Segment one 3D image.

        Args:
            image: 3D :class:`~kidneyseg.io.Image`, any orientation; float or integer voxels.

        Returns:
            :class:`~kidneyseg.pipelines.Result` whose mask has the input's shape and affine.

        Raises:
            InputError: not 3D, NaN/Inf voxels, constant, singular affine; an image that looks
                like CT (DICOM Modality CT or Hounsfield-unit intensities,
                :func:`kidneyseg.preprocess.modality.ct_evidence`) unless ``allow_ct``.
            GeometryError: the output grid would differ from the input's (a bug).
        """
        t0 = time.perf_counter()
        image, labels_c, prepared, kidney_p, members = self.predict(image)
        return self.finish(image, labels_c, prepared, t0, kidney_p, members)

    def predict(self, image: Image) -> tuple[Image, np.ndarray, Prepared, np.ndarray, list[np.ndarray] | None]:
        """The first half of :meth:`segment`: check the image and run the network(s).

        Returns:
            ``(image, labels_c, prepared, kidney_probability, member_kidney)``: the checked
            float32 image, then the arguments :meth:`finish` takes (``member_kidney`` is
            ``None`` unless :attr:`member_agreement`). Benchmarks that compare post-processing
            settings predict once and call :meth:`finish` per setting (on a copy of ``labels_c``).

        Raises:
            InputError: as :meth:`segment`.
        """
        image = check_volume(image)
        if not self.allow_ct:
            reason = ct_evidence(image)
            if reason:
                raise InputError(f"{image.source or 'image'}: looks like CT ({reason}); pipeline {self.name} is for MRI "
                                 "(--allow-ct to segment it anyway)")
        if image.array.dtype != np.float32:
            image = image.with_array(np.asarray(image.array, dtype=np.float32))
        out = predict_labels(self.bundle.network, image, self.bundle.config, self.bundle.device,
                             self.bundle.inference, with_probability=True, with_members=self.member_agreement)
        labels_c, prepared, kidney_p = out[:3]
        return image, labels_c, prepared, kidney_p, (out[3] if len(out) > 3 else None)

    def finish(self, image: Image, labels_c: np.ndarray, prepared: Prepared, t0: float | None = None,
               kidney_probability: np.ndarray | None = None, member_kidney: list[np.ndarray] | None = None) -> Result:
        """Post-process the network's labels and build the :class:`Result` (the second half
        of :meth:`segment`; benchmarks that score cached probabilities call it directly).

        Args:
            image: the checked float32 input.
            labels_c: uint8 ``(X, Y, Z)`` network labels on ``prepared.canonical``'s grid
                (auxiliary organ classes included; they are dropped here). Modified in place.
            prepared: the :func:`~kidneyseg.inference.prepare` result for ``image``.
            t0: ``time.perf_counter()`` at the start, for ``Result.seconds``.
            kidney_probability: float32 ``(X, Y, Z)`` summed kidney probability on the same grid,
                for the ``uncertain_fraction`` / ``low_confidence`` QC flags (left out without it).
            member_kidney: an ensemble's per-network bool ``(X, Y, Z)`` kidney masks on the same
                grid, for ``member_dice_right`` / ``member_dice_left``
                (:func:`kidneyseg.postprocess.quality.member_dice`; left out without them).

        QC flags added to the geometry flags: ``volume_outside_validated_range`` (when the
        model's ``inference.json`` gives ``validated_volume_ml``), ``uncertain_fraction``,
        ``low_confidence`` and ``low_confidence_threshold`` (the value applied; with a
        probability, and a threshold for the flag:
        :meth:`~kidneyseg.inference.settings.InferenceConfig.low_confidence_threshold_for` the
        number of planes averaged, ``prepared.planes``), and for a multiplane 2D model ``planes``,
        the planes it averaged (e.g. ``"coronal"``, ``"axial+coronal+sagittal"``). With
        ``kidney_threshold_low_confidence`` in the settings, a scan flagged ``low_confidence`` has
        its kidney redrawn as ``kidney_probability >= kidney_threshold_low_confidence`` before
        the post-processing, and ``kidney_threshold`` records the threshold applied.

        Raises:
            ValueError: ``component_ranking="probability"`` or ``kidney_threshold_low_confidence``
                without ``kidney_probability``, or the latter with more than one kidney class.
        """
        t0 = time.perf_counter() if t0 is None else t0
        cfg = self.bundle.config
        labels_c[labels_c > cfg.kidney_classes] = 0  # auxiliary organs (liver, spleen) are not output
        settings = self.bundle.inference
        confidence = {}
        if kidney_probability is not None:
            confidence["uncertain_fraction"] = round(uncertain_fraction(kidney_probability), 3)
            limit = settings.low_confidence_threshold_for(len(prepared.planes))
            if limit is not None:
                confidence["low_confidence"] = bool(confidence["uncertain_fraction"] > limit)
                confidence["low_confidence_threshold"] = limit  # the value applied: it depends on the planes averaged
        if settings.kidney_threshold_low_confidence is not None:
            if cfg.kidney_classes != 1 or kidney_probability is None:
                raise ValueError(f"{self.name}: kidney_threshold_low_confidence needs one kidney class and the kidney "
                                 "probability")
            redraw = confidence.get("low_confidence", False)
            if redraw:  # a scan the network does not know: it under-segments, draw the kidney lower
                labels_c[...] = kidney_probability >= settings.kidney_threshold_low_confidence
            confidence["kidney_threshold"] = (settings.kidney_threshold_low_confidence if redraw
                                              else settings.kidney_threshold)
        midline = body_midline_x_mm(prepared.canonical.array, prepared.canonical.affine)
        regions = None
        if settings.neck_split_mm is not None:  # a false region joined by a thin bridge is ranked on its own
            regions = split_at_necks(labels_c > 0, prepared.canonical.affine, settings.neck_split_mm)
        by_probability = settings.component_ranking == "probability"
        if by_probability and kidney_probability is None:
            raise ValueError(f"{self.name}: component_ranking 'probability' needs the kidney probability")
        assigned = assign_kidneys(labels_c, prepared.canonical.affine, self.label_map,
                                  midline_x_mm=midline, keep_largest=self.keep_largest,
                                  core_depth_mm=self.core_depth_mm, regions=regions,
                                  rank_weights=kidney_probability if by_probability else None)
        qc = {
            "kidney_count": assigned.kidney_count,
            "empty": bool(assigned.kidney_count == 0),
            "laterality_source": assigned.laterality_source,
            "laterality_conflict": assigned.laterality_conflict,
            "removed_voxels": assigned.removed_voxels,
        }
        if member_kidney is not None:
            agreement = member_dice(member_kidney, prepared.canonical.affine, midline)
            qc["member_dice_right"] = round(agreement["kidney_right"], 3)
            qc["member_dice_left"] = round(agreement["kidney_left"], 3)
        qc.update(confidence)
        if prepared.planes:  # a multiplane 2D model: the planes it read the scan in
            names = {axis: name for name, axis in PLANE_AXES.items()}
            qc["planes"] = "+".join(names[a] for a in sorted(prepared.planes, reverse=True))
        result = volumetric_result(image, from_canonical(assigned.labels, prepared.reorientation), self.label_map, qc,
                                   t0, from_canonical(labels_c, prepared.reorientation))
        if settings.validated_volume_ml is not None:
            result.qc["volume_outside_validated_range"] = outside_range(
                result.volumes_ml, list(self.label_map.values()), settings.validated_volume_ml)
        if kidney_probability is not None:
            result.probability = from_canonical(np.asarray(kidney_probability, dtype=np.float32), prepared.reorientation)
        return result
