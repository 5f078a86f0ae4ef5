"""Inference settings of a model folder (``inference.json``): test-time augmentation and the
decision threshold. They are chosen after training, by cross-validation, and travel with the
weights (as nnU-Net keeps its post-processing choice in the model folder). A folder without
the file gets one plain pass and the argmax, i.e. what every model did before the file existed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import InputError
from ..specs.base import SpecConfig

INFERENCE = "inference.json"


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Passes averaged at inference (softmax probabilities, as nnU-Net averages mirrored passes).

    Attributes:
        shifts_px: in-plane translations ``(dx, dy)`` of the input, in pixels of the model's
            grid (``target_spacing_mm``); ``(0, 0)`` is the plain pass. A U-Net with ``L`` levels
            pools ``L - 1`` times, so its output is not translation-equivariant below
            ``2 ** (L - 1)`` pixels; averaging sub-grid shifts removes part of that aliasing.
        mirror_x: also run every shift mirrored along the patient's left-right axis (only for
            networks trained with ``augment_flip_lr``: others have learnt the liver's side).
    """

    shifts_px: tuple[tuple[int, int], ...] = ((0, 0),)
    mirror_x: bool = False

    def __post_init__(self) -> None:
        shifts = tuple((int(a), int(b)) for a, b in self.shifts_px)
        if not shifts:
            raise ValueError("TestTimeAugmentation.shifts_px: need at least one shift, e.g. (0, 0)")
        object.__setattr__(self, "shifts_px", shifts)

    @property
    def passes(self) -> int:
        """Forward passes per slice batch."""
        return len(self.shifts_px) * (2 if self.mirror_x else 1)

    @property
    def margin(self) -> int:
        """Largest shift, pixels."""
        return max(max(abs(a), abs(b)) for a, b in self.shifts_px)


NO_TTA = TestTimeAugmentation()


@dataclass(frozen=True)
class InferenceConfig(SpecConfig):
    """How a trained 2D/2.5D network is applied.

    Attributes:
        tta_shifts_px: in-plane translations ``(dx, dy)`` averaged, in pixels of the model's
            grid; ``((0, 0),)`` is a single plain pass.
        tta_mirror_x: also average the left-right mirrored passes (only sensible for a network
            trained with ``augment_flip_lr``).
        kidney_threshold: ``None`` for the argmax; else the summed kidney probability at or
            above which a voxel is kidney (:func:`kidneyseg.inference.predict.decide_labels`).
        chosen_by: free text recording how the values were chosen (e.g. the CV run).
        validated_volume_ml: ``(low, high)``: the range of single-kidney volumes (mL) the model
            was validated on; a kidney outside it raises the QC flag
            ``volume_outside_validated_range``. ``None``: the flag is not computed.
        low_confidence_threshold: the QC flag ``low_confidence`` is raised when the share of
            uncertain kidney voxels (:func:`kidneyseg.postprocess.uncertain_fraction`) exceeds
            it. ``None``: the flag is not computed.
        low_confidence_threshold_no_tta: the same threshold derived on predictions made with
            one plain pass (``kidneyseg segment --fast``/``--no-tta``), whose probabilities are
            less averaged than those of the test-time augmentation; :meth:`without_tta` puts it
            in place of ``low_confidence_threshold``. ``None``: ``--fast`` keeps
            ``low_confidence_threshold``.
        low_confidence_threshold_three_planes: ``recipe="multiplane"`` 2D models only: the
            threshold for a prediction that averages more than one plane (``planes`` other than
            ``"acquisition"`` on a scan that is not a slab), whose uncertain share runs higher
            than one plane's because the planes disagree at the kidney's border
            (``benchmarks/README.md``, "A QC threshold of its own for three-plane predictions").
            ``None``: ``low_confidence_threshold`` serves every prediction.
        low_confidence_threshold_three_planes_no_tta: the same for one plain pass (``--fast``);
            :meth:`without_tta` puts it in place of ``low_confidence_threshold_three_planes``.
        qc_chosen_by: free text recording how the QC settings were chosen.
        planes: ``recipe="multiplane"`` models only: ``"acquisition"`` segments in the plane
            across the thickest voxel side (all three for a near-isotropic voxel,
            :func:`kidneyseg.io.orientation.acquisition_axes`); ``"all"`` always averages the
            softmax of the axial, coronal and sagittal passes; ``"coverage"`` averages all three
            when the scan covers at least
            :data:`~kidneyseg.io.orientation.PLANES_COVERAGE_MM` along its acquisition axis and
            is ``"acquisition"`` on a thinner slab (``benchmarks/README.md``, "Planes by coverage":
            the other planes help on whole-abdomen scans and fail on slabs); ``"fov"`` is
            ``"coverage"`` except that a near-isotropic scan keeps only the planes whose slices
            measure at least ``PLANES_COVERAGE_MM`` on both sides
            (:func:`kidneyseg.io.orientation.wide_planes`). A plane added to the
            acquisition plane gets one plain pass (``tta_shifts_px`` apply to the acquisition
            plane) and is cut at the model's spacing.
        normalise: ``recipe="multiplane"`` 2D models only: ``"volume"`` z-scores the whole
            volume once (0.5/99.5 percentile clip; every model before 2026-12-04); ``"slice"``
            clips and z-scores each slice of the plane the network runs in on its own, as the
            synthesised training slices are (:func:`kidneyseg.training.synth.normalise_slice`),
            so a scan whose slices differ in brightness gives every slice the same scale.
        tta_gamma: ``recipe="multiplane"`` models only: intensity test-time augmentation; every
            test-time pass is repeated on the volume at each of these gamma exponents
            (:func:`kidneyseg.preprocess.normalise.gamma_zscore`) and the softmax averaged over
            all of them; ``(1.0,)`` (the default) is the plain input.
        neck_split_mm: ``None`` (the default): kidney components are kept or dropped whole.
            A depth in mm: the kidney foreground is first cut where it narrows below twice this
            depth (:func:`kidneyseg.postprocess.kidneys.split_at_necks`), so that a false region
            joined to a kidney by a thin bridge is ranked, and dropped, on its own
            (``benchmarks/README.md``, "Kidney components split at narrow necks").
        component_ranking: how the kept components are chosen
            (:func:`kidneyseg.postprocess.assign_kidneys`): ``"core"`` (the default, by their
            voxels at least the pipeline's core depth inside) or ``"probability"`` (by their
            summed kidney probability, the expected kidney volume).
        kidney_threshold_low_confidence: ``None`` (the default): every scan is drawn at
            ``kidney_threshold``. A probability: a scan flagged ``low_confidence`` (the threshold
            applied for its planes and passes) has its kidney redrawn from the kidney probability
            at this threshold before the post-processing, because a network that does not know a
            scan's contrast under-segments it (``benchmarks/README.md``, "The kidney threshold
            where the network is unsure"). Needs ``kidney_threshold`` and a low-confidence
            threshold; models with more than one kidney class refuse it
            (:meth:`kidneyseg.pipelines.mr_t2.MRKidneyPipeline.finish`).

    Raises:
        ValueError: an empty shift list, a shift larger than 64 pixels, an empty or repeated
            gamma list or a gamma outside [0.25, 4], a threshold outside
            (0, 1), a ``neck_split_mm`` not above 0, an unknown ``component_ranking``, a volume range that is not ``low < high`` with ``low >= 0``,
            a ``kidney_threshold_low_confidence`` without ``kidney_threshold`` and a low-confidence threshold.
    """

    STRICT_KEYS: ClassVar[bool] = True  # a misspelt field in a hand-written JSON is an error

    tta_shifts_px: tuple[tuple[int, int], ...] = ((0, 0),)
    tta_mirror_x: bool = False
    kidney_threshold: float | None = None
    chosen_by: str = ""
    validated_volume_ml: tuple[float, float] | None = None
    low_confidence_threshold: float | None = None
    qc_chosen_by: str = ""
    planes: str = "acquisition"
    low_confidence_threshold_no_tta: float | None = None
    normalise: str = "volume"
    tta_gamma: tuple[float, ...] = (1.0,)
    low_confidence_threshold_three_planes: float | None = None
    low_confidence_threshold_three_planes_no_tta: float | None = None
    neck_split_mm: float | None = None
    component_ranking: str = "core"
    kidney_threshold_low_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.neck_split_mm is not None and not float(self.neck_split_mm) > 0.0:
            raise ValueError(f"neck_split_mm: expected a depth in mm > 0 or null, got {self.neck_split_mm!r}")
        if self.component_ranking not in ("core", "probability"):
            raise ValueError(f"component_ranking: expected 'core' or 'probability', got {self.component_ranking!r}")
        try:
            gammas = tuple(float(g) for g in self.tta_gamma)
        except (TypeError, ValueError):
            raise ValueError(f"tta_gamma: expected a list of numbers, got {self.tta_gamma!r}") from None
        if not gammas or len(set(gammas)) != len(gammas) or not all(0.25 <= g <= 4.0 for g in gammas):
            raise ValueError(f"tta_gamma: expected distinct values in [0.25, 4], got {self.tta_gamma!r}")
        object.__setattr__(self, "tta_gamma", gammas)
        if self.normalise not in ("volume", "slice"):
            raise ValueError(f"normalise: expected 'volume' or 'slice', got {self.normalise!r}")
        if self.planes not in ("acquisition", "all", "coverage", "fov"):
            raise ValueError(f"planes: expected 'acquisition', 'all', 'coverage' or 'fov', got {self.planes!r}")
        try:
            tta = TestTimeAugmentation(self.tta_shifts_px, bool(self.tta_mirror_x))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"tta_shifts_px: {exc}") from None
        if tta.margin > 64:
            raise ValueError(f"tta_shifts_px: shifts of at most 64 pixels, got {self.tta_shifts_px!r}")
        object.__setattr__(self, "tta_shifts_px", tta.shifts_px)
        if self.kidney_threshold is not None and not 0.0 < float(self.kidney_threshold) < 1.0:
            raise ValueError(f"kidney_threshold: expected a value in (0, 1) or null, got {self.kidney_threshold!r}")
        low_t = self.kidney_threshold_low_confidence
        if low_t is not None:
            if not 0.0 < float(low_t) < 1.0:
                raise ValueError(f"kidney_threshold_low_confidence: expected a value in (0, 1) or null, got {low_t!r}")
            if self.kidney_threshold is None or self.low_confidence_threshold is None:
                raise ValueError("kidney_threshold_low_confidence: needs kidney_threshold and low_confidence_threshold")
        if self.validated_volume_ml is not None:
            lo, hi = (float(v) for v in self.validated_volume_ml)
            if not 0.0 <= lo < hi:
                raise ValueError(f"validated_volume_ml: expected [low, high] with 0 <= low < high, got {self.validated_volume_ml!r}")
            object.__setattr__(self, "validated_volume_ml", (lo, hi))
        for name in ("low_confidence_threshold", "low_confidence_threshold_no_tta",
                     "low_confidence_threshold_three_planes", "low_confidence_threshold_three_planes_no_tta"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value):
                raise ValueError(f"{name}: expected > 0 or null, got {value!r}")

    @property
    def tta(self) -> TestTimeAugmentation:
        """The :class:`TestTimeAugmentation` these settings ask for."""
        return TestTimeAugmentation(self.tta_shifts_px, self.tta_mirror_x)

    def without_tta(self) -> "InferenceConfig":
        """The same kidney threshold with one plain pass (``kidneyseg segment --no-tta``), and
        the QC threshold derived for one pass when the folder has one
        (``low_confidence_threshold_no_tta``)."""
        low = self.low_confidence_threshold
        if self.low_confidence_threshold_no_tta is not None:
            low = self.low_confidence_threshold_no_tta
        low3 = self.low_confidence_threshold_three_planes
        if self.low_confidence_threshold_three_planes_no_tta is not None:
            low3 = self.low_confidence_threshold_three_planes_no_tta
        return dataclasses.replace(self, tta_shifts_px=((0, 0),), tta_mirror_x=False, tta_gamma=(1.0,),
                                   low_confidence_threshold=low, low_confidence_threshold_three_planes=low3)

    def low_confidence_threshold_for(self, planes: int) -> float | None:
        """The ``low_confidence`` threshold for a prediction averaged over ``planes`` planes
        (1 for a single plane or a 3D network): ``low_confidence_threshold_three_planes`` when
        ``planes > 1`` and it is set, else ``low_confidence_threshold`` (``None``: no flag)."""
        if planes > 1 and self.low_confidence_threshold_three_planes is not None:
            return self.low_confidence_threshold_three_planes
        return self.low_confidence_threshold


def read_inference_config(folder: str | Path) -> InferenceConfig:
    """``folder/inference.json``, or the defaults (one pass, argmax) when there is none.

    Raises:
        InputError: the file exists but is not valid.
    """
    path = Path(folder) / INFERENCE
    if not path.is_file():
        return InferenceConfig()
    try:
        return InferenceConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: invalid inference settings ({exc})") from None


def write_inference_config(settings: InferenceConfig, folder: str | Path) -> Path:
    """Write ``folder/inference.json``."""
    path = Path(folder) / INFERENCE
    path.write_text(json.dumps(settings.to_dict(), indent=2) + "\n")
    return path
