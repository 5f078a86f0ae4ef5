"""Method spec of the MR 2D/3D U-Nets (``mr-t2-unet``, ``mr-multiprotocol-unet``): the typed
configuration saved as ``config.json`` beside every trained model, read by the model store and
the pipelines, written by the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..labels import MR_KIDNEYS
from .base import SpecConfig


NORMALISATIONS = ("percentile_zscore", "body_clip_zscore", "body_ratio")
"""Intensity normalisations of :class:`TrainConfig` (see its ``normalisation``)."""

ELASTIC_SPACING_PX = 16
"""Control-point spacing (pixels of the training grid; 32 mm at the multiplane recipe's 2 mm) of
the elastic deformation (:attr:`TrainConfig.augment_elastic_prob`)."""

ELASTIC_MAGNITUDE_PX = (0.0, 3.0)
"""Range of the standard deviation (pixels) of the control-point offsets of the elastic
deformation: on a 128-pixel patch about 2 px (4 mm) mean and up to 8 px displacement."""


@dataclass(frozen=True)
class TrainConfig(SpecConfig):
    """Everything that determines a trained 2.5D kidney U-Net.

    Attributes:
        dataset: dataset folder (CHAOS layout or nnU-Net raw layout).
        layout: ``"chaos"`` (``image_N.nii.gz`` + ``label_N.nii.gz``) or ``"nnunet"``
            (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        exclude_cases: case ids never used for training (e.g. the bundled example).
        label_map: output label value -> structure name (background 0 implicit).
        merge_sides: train the network on one "kidney" class (union of the sides) and
            name right and left afterwards from world coordinates
            (:func:`kidneyseg.postprocess.assign_kidneys`). A patch-based network cannot
            see where a patch lies in the body, so per-side classes are learnt poorly
            (measured: see benchmarks/README.md); this is the default.
        auxiliary_labels: structures of the training labels (by name, e.g. ``liver`` and
            ``spleen`` in CHAOS) learnt as extra classes so the network is taught what
            bright organs next to a kidney are *not*; they are discarded at inference.
            Names absent from a dataset's labels simply never occur.
        context_slices: neighbours on each side fed as channels (0 = plain 2D; 1 = three
            slices, "2.5D").
        target_spacing_mm: in-plane spacing in mm the network sees; images are resampled
            in-plane to it (slice spacing is kept).
        channels: U-Net feature maps per level.
        num_res_units: residual units per U-Net block.
        spatial_dims: 2 for the slice-wise (2.5D) U-Net, 3 for a 3D U-Net trained on
            patches and run as a Gaussian-weighted sliding window (MONAI).
        z_pool_levels: 3D only: how many of the deepest U-Net levels also downsample along
            the slice axis (the others pool in-plane only, as nnU-Net does for anisotropic
            voxels: 1.25 x 1.25 x 7.7 mm becomes about isotropic after two in-plane poolings).
        patch_size: training patch in voxels, ``(X, Y)`` for 2D or ``(X, Y, Z)`` for 3D;
            every axis a multiple of its total downsampling.
        batch_size: patches per iteration.
        iterations: optimiser steps.
        learning_rate: AdamW initial learning rate, decayed polynomially (exponent 0.9, as
            nnU-Net) to 0.
        weight_decay: AdamW weight decay.
        foreground_fraction: fraction of each batch whose patch is centred near a kidney
            voxel (foreground oversampling; nnU-Net uses 1/3); where ``batch_size *
            foreground_fraction`` rounds to 0 (batch 1), the probability per patch instead
            (:func:`kidneyseg.training.data.foreground_slots`).
        augment_rotation_deg: maximum in-plane rotation.
        augment_scale: maximum relative zoom (0.15 -> 0.85 to 1.15).
        augment_intensity: "standard" (intensity scale +-25 %, gamma 0.7-1.5, Gaussian
            noise) or "strong", which adds a random monotone remapping of the intensity
            histogram (MONAI ``RandHistogramShiftd``, p 0.5) and a smooth multiplicative
            bias field (MONAI ``RandBiasFieldd``, p 0.3), for scans whose contrast
            differs from the training set's (for example, CHAOS case 36, where fluid
            rather than kidney is the brightest tissue).
        augment_elastic_prob: probability per 2D patch of a smooth random elastic deformation
            (MONAI ``Rand2DElasticd``: control points every :data:`ELASTIC_SPACING_PX` pixels,
            offsets normal with a standard deviation drawn uniformly from
            :data:`ELASTIC_MAGNITUDE_PX` pixels, B-spline interpolated), applied to image and
            labels after the rotation and zoom. It gives the kidneys, liver and spleen shapes that
            none of the few training subjects has (SynthSeg's nonlinear deformation, Billot et
            al., Medical Image Analysis 86, 2023, section 3.1). 2D networks only; 0 (off) in
            every model made before 2026-12-04.
        normalisation: ``"percentile_zscore"`` (clip at the scan's 0.5/99.5 percentiles,
            then z-score; models made before 2026-12-01) or ``"body_clip_zscore"``: first
            clip at ``body_clip_ratio`` x the body median
            (:func:`kidneyseg.preprocess.normalise.clip_body_ratio`), then the same. The
            second keeps tissue brighter than any training kidney (a large cyst) from
            setting the scale. ``"body_ratio"``: the same clip, then divided by the body
            median and 1 subtracted, no z-score (:func:`kidneyseg.preprocess.normalise.body_ratio`),
            so a cyst does not set the scale through the standard deviation either.
        body_clip_ratio: the clip of ``"body_clip_zscore"`` and ``"body_ratio"`` as a
            multiple of the body median. ``None`` in a config given to training: training sets it to the 99.5th
            percentile of the training kidneys' ratio (the training fingerprint, as nnU-Net
            does for CT) and saves it in the model's config.json.
        augment_flip_lr: mirror along the patient's left-right axis. A mirrored body puts
            the right kidney on the left, so the labels are swapped with it (explicitly, in
            :func:`kidneyseg.training.augment.flip_left_right`); off by default because the
            liver's side is a real cue. In the ``multiplane`` recipe (one kidney class) an axial
            or coronal patch is mirrored with no label change, so each kidney is also seen in
            the other's surroundings.
        folds: number of cross-validation folds, split by patient.
        fold: the fold to hold out, or ``None`` to train on every (non-excluded) case.
        seed: seeds numpy and torch (sampling, augmentation, initialisation).
        split_seed: seeds the patient split into folds; ``None`` (the default, and every
            model made before 2026-12-02) uses ``seed``. Set it to keep the folds fixed
            while ``seed`` changes, as nnU-Net keeps its split fixed across trainings
            (for a seed ensemble measured by cross-validation).
        num_threads: torch intra-op threads (0 = torch's default).
        checkpoint_every: iterations between resumable checkpoints.
        compile: train through ``torch.compile`` (TorchInductor): the same network and weights,
            about 25 % shorter steps on a 2D network on CPU (0.137 -> 0.102 s per 12 x 128 x 128
            step, AMD EPYC, 1 thread, 2026-12-04) after a compilation of about 30 s; needs a C
            compiler. Like ``num_threads`` it says how a run executes, not what it trains.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        recipe: ``"slices"`` (2.5D axial slices of the real images; every model made before
            2026-12-02) or ``"multiplane"``: a 2D network (``context_slices`` 0) on isotropic
            volumes, trained on patches in the three planes (``plane_weights``), a share
            ``synth_fraction`` of them synthesised from label maps
            (:mod:`kidneyseg.training.synth`, SynthSeg's domain randomisation), and applied in
            each scan's acquisition plane (``target_spacing_mm`` then holds on every axis).
        synth_fraction: ``multiplane``: share of patches synthesised from label maps.
        tissue_classes: ``multiplane``: Gaussian-mixture tissue classes of the generation maps.
        kidney_subclasses: ``multiplane``: Gaussian-mixture classes inside the kidneys.
        generation_smoothing_px: ``multiplane``: radius (voxels) of the majority filter that
            cleans the tissue classes of the generation maps; 0 for none.
        perirenal_shell_mm: ``multiplane``: the tissue within this distance (mm) of the kidneys
            becomes a class of its own in the generation maps
            (:func:`kidneyseg.training.synth.generation_map` ``shell_px``), so synthesised
            images show the perirenal fat at any intensity (bright as in T1-weighted, HASTE and
            gradient-echo scans) independently of the muscle it is merged with in the
            fat-suppressed training scans. Kidneys drawn on one slice only (ukat) get their shell
            on that slice. 0 (off) in every model made before 2026-12-04.
        intensity_curve_fraction: ``multiplane``: share of the real (not synthesised) patches
            remapped through a random, not necessarily monotone, intensity curve
            (:func:`kidneyseg.training.synth.random_intensity_curve`), so that the order of
            organ intensities in the training scans is not a cue; 0.5 in every model made
            before 2026-12-03.
        synth_outline_fraction: ``multiplane``, 2D: share of the synthesised patches whose organ
            borders get a one-pixel dark line (opposed-phase India-ink artefact,
            :func:`kidneyseg.training.synth.organ_outline`); 0 in every model made before
            2026-12-04.
        plane_weights: ``multiplane``: relative frequency of ``axial``, ``coronal`` and
            ``sagittal`` training patches.
        extra_datasets: more ``(folder, layout)`` training datasets (e.g. ukat); their cases
            join the training set and are never in a validation fold.
        weight_average_from: stochastic weight averaging (SWA; Izmailov et al., UAI 2018; as a
            domain-generalisation method, SWAD, Cha et al., NeurIPS 2021): from this fraction of
            ``iterations`` on, the weights after every ``weight_average_every``-th step are
            averaged with equal weight (``torch.optim.swa_utils.AveragedModel``), and the average
            is the saved model; the last iterate is saved beside it in ``last_iterate/``.
            ``None`` (every model made before 2026-12-04): the last iterate is the model. The
            networks use instance normalisation (no running statistics), so the average needs
            no batch-norm update.
        weight_average_every: iterations between two weights that enter the average.
    """

    STRICT_KEYS: ClassVar[bool] = True  # a misspelt field in a hand-written JSON is an error

    dataset: str = ""
    layout: str = "chaos"
    exclude_cases: tuple[str, ...] = ()
    label_map: dict[int, str] = field(default_factory=lambda: dict(MR_KIDNEYS))
    merge_sides: bool = True
    auxiliary_labels: tuple[str, ...] = ("liver", "spleen")
    context_slices: int = 1
    target_spacing_mm: float = 1.25
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 1
    spatial_dims: int = 2
    z_pool_levels: int = 2
    patch_size: tuple[int, ...] = (160, 160)
    batch_size: int = 12
    iterations: int = 4000  # the shipped model (2000 gave CV Dice 0.845 / 0.801, benchmarks/README.md)
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    foreground_fraction: float = 0.33
    augment_rotation_deg: float = 15.0
    augment_scale: float = 0.15
    augment_flip_lr: bool = False
    augment_intensity: str = "standard"
    augment_elastic_prob: float = 0.0
    normalisation: str = "percentile_zscore"
    body_clip_ratio: float | None = None
    folds: int = 5
    fold: int | None = None
    seed: int = 0
    split_seed: int | None = None
    num_threads: int = 0
    checkpoint_every: int = 100
    compile: bool = False
    device: str = "auto"
    recipe: str = "slices"
    synth_fraction: float = 0.0
    tissue_classes: int = 8
    kidney_subclasses: int = 2
    generation_smoothing_px: int = 0
    perirenal_shell_mm: float = 0.0
    intensity_curve_fraction: float = 0.5
    synth_outline_fraction: float = 0.0
    plane_weights: dict[str, float] = field(default_factory=lambda: {"axial": 1.0, "coronal": 1.0, "sagittal": 0.5})
    extra_datasets: tuple[tuple[str, str], ...] = ()
    weight_average_from: float | None = None
    weight_average_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_datasets", tuple((str(a), str(b)) for a, b in self.extra_datasets))
        object.__setattr__(self, "plane_weights", {str(k): float(v) for k, v in self.plane_weights.items()})
        if self.recipe not in ("slices", "multiplane"):
            raise ValueError(f"recipe: expected 'slices' or 'multiplane', got {self.recipe!r}")
        if self.recipe == "multiplane" and self.context_slices != 0:
            raise ValueError("recipe 'multiplane': expected context_slices 0")
        if self.recipe == "multiplane" and self.spatial_dims == 3 and self.z_pool_levels != len(self.channels) - 1:
            raise ValueError("recipe 'multiplane' in 3D works on an isotropic grid: z_pool_levels must be "
                             f"len(channels) - 1 = {len(self.channels) - 1}, got {self.z_pool_levels}")
        if not 0.0 <= self.intensity_curve_fraction <= 1.0:
            raise ValueError(f"intensity_curve_fraction: expected in [0, 1], got {self.intensity_curve_fraction}")
        if not 0.0 <= self.synth_outline_fraction <= 1.0:
            raise ValueError(f"synth_outline_fraction: expected in [0, 1], got {self.synth_outline_fraction}")
        if self.weight_average_from is not None and not 0.0 <= self.weight_average_from < 1.0:
            raise ValueError(f"weight_average_from: expected None or in [0, 1), got {self.weight_average_from}")
        if self.weight_average_every < 1:
            raise ValueError(f"weight_average_every: expected >= 1, got {self.weight_average_every}")
        if self.weight_average_from is not None and \
                self.iterations // self.weight_average_every * self.weight_average_every <= self.iterations * self.weight_average_from:
            raise ValueError(f"weight averaging: no step after {100 * self.weight_average_from:g} % of {self.iterations} "
                             f"iterations is a multiple of weight_average_every {self.weight_average_every}")
        if not 0.0 <= self.synth_fraction <= 1.0:
            raise ValueError(f"synth_fraction: expected in [0, 1], got {self.synth_fraction}")
        if set(self.plane_weights) != {"axial", "coronal", "sagittal"} or min(self.plane_weights.values()) < 0 \
                or sum(self.plane_weights.values()) <= 0:
            raise ValueError(f"plane_weights: expected non-negative axial, coronal, sagittal weights, got {self.plane_weights}")
        if self.perirenal_shell_mm < 0:
            raise ValueError(f"perirenal_shell_mm: expected >= 0, got {self.perirenal_shell_mm}")
        if self.generation_smoothing_px < 0:
            raise ValueError(f"generation_smoothing_px: expected >= 0, got {self.generation_smoothing_px}")
        if self.tissue_classes < 1 or self.kidney_subclasses < 1:
            raise ValueError("tissue_classes and kidney_subclasses must be >= 1")
        object.__setattr__(self, "exclude_cases", tuple(str(c) for c in self.exclude_cases))
        object.__setattr__(self, "auxiliary_labels", tuple(str(c) for c in self.auxiliary_labels))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "patch_size", tuple(int(c) for c in self.patch_size))
        object.__setattr__(self, "label_map", {int(k): str(v) for k, v in self.label_map.items()})
        if self.layout not in ("chaos", "nnunet"):
            raise ValueError(f"layout: expected 'chaos' or 'nnunet', got {self.layout!r}")
        if self.context_slices < 0:
            raise ValueError(f"context_slices: expected >= 0, got {self.context_slices}")
        if not self.target_spacing_mm > 0:
            raise ValueError(f"target_spacing_mm: expected > 0, got {self.target_spacing_mm}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, got {self.spatial_dims}")
        factors = [int(np.prod([s[a] for s in self.strides])) for a in range(self.spatial_dims)]
        if len(self.patch_size) != self.spatial_dims or any(p % f for p, f in zip(self.patch_size, factors)):
            raise ValueError(f"patch_size: expected {self.spatial_dims} sizes, multiples of {factors}, got {self.patch_size}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction: expected in [0, 1], got {self.foreground_fraction}")
        if self.batch_size < 1 or self.iterations < 1 or self.checkpoint_every < 1:
            raise ValueError("batch_size, iterations and checkpoint_every must be >= 1")
        if self.folds < 2:
            raise ValueError(f"folds: expected >= 2, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold: expected None or 0..{self.folds - 1}, got {self.fold}")
        if sorted(self.label_map) != list(range(1, len(self.label_map) + 1)):
            raise ValueError(f"label_map: expected values 1..N, got {sorted(self.label_map)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: expected auto, cpu or cuda, got {self.device!r}")
        if self.augment_intensity not in ("standard", "strong"):
            raise ValueError(f"augment_intensity: expected 'standard' or 'strong', got {self.augment_intensity!r}")
        if not 0.0 <= self.augment_elastic_prob <= 1.0:
            raise ValueError(f"augment_elastic_prob: expected in [0, 1], got {self.augment_elastic_prob}")
        if self.augment_elastic_prob > 0 and self.spatial_dims != 2:
            raise ValueError("augment_elastic_prob: the elastic deformation is for 2D networks (spatial_dims 2)")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation: expected one of {', '.join(NORMALISATIONS)}, got {self.normalisation!r}")
        if self.body_clip_ratio is not None and not self.body_clip_ratio > 0:
            raise ValueError(f"body_clip_ratio: expected None or > 0, got {self.body_clip_ratio}")

    @property
    def strides(self) -> list[tuple[int, ...]]:
        """Per-level downsampling factors of the U-Net, one tuple per level."""
        levels = len(self.channels) - 1
        if self.spatial_dims == 2:
            return [(2, 2)] * levels
        return [(2, 2, 2 if lvl >= levels - self.z_pool_levels else 1) for lvl in range(levels)]

    @property
    def fold_seed(self) -> int:
        """The seed of the patient split: ``split_seed``, or ``seed`` when that is ``None``."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def body_referenced(self) -> bool:
        """The normalisation clips at a multiple of the body median (needs ``body_clip_ratio``)."""
        return self.normalisation != "percentile_zscore"

    @property
    def clip_ratio(self) -> float | None:
        """The body-median clip of ``"body_clip_zscore"`` / ``"body_ratio"``, or ``None`` for none.

        Raises:
            ValueError: a body-referenced normalisation with the ratio not yet set by training.
        """
        if not self.body_referenced:
            return None
        if self.body_clip_ratio is None:
            raise ValueError(f"{self.normalisation}: body_clip_ratio is not set (training sets it from the training kidneys)")
        return self.body_clip_ratio

    @property
    def kidney_classes(self) -> int:
        """Network classes that are kidney (values 1..kidney_classes of its argmax)."""
        return 1 if self.merge_sides else len(self.label_map)

    @property
    def network_classes(self) -> int:
        """Output channels of the network: background, kidney class(es), auxiliary classes."""
        return 1 + self.kidney_classes + len(self.auxiliary_labels)
