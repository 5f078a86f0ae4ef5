"""Method spec of ``unsupervised-cluster`` (seed 001): the pipeline's and the per-scan
clustering's settings, and the block-averaging factors of its working grid, shared by the
pipeline (:mod:`kidneyseg.pipelines.unsupervised`) and the optimiser
(:mod:`kidneyseg.training.clustering`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..io import Image, Reorientation
from ..localize import ROIConfig, ROIResult
from ..preprocess.registration import MAX_SAMPLES
from .base import SpecConfig

PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class ClusterConfig(SpecConfig):
    """Settings of the differentiable feature clustering (defaults: seed 001, section 3).

    Attributes:
        n_blocks: convolution blocks N (paper's ablation best: 2).
        channels: features p and the largest number of clusters (50).
        spatial_dims: 3 (the method) or 2 (the ablation: each slice on its own).
        continuity_weight: lambda of equation (3) (5).
        learning_rate: SGD learning rate (0.01).
        momentum: SGD momentum (0.9).
        epsilon: stop when the absolute change of the loss between two iterations is
            below this (0.005).
        max_iterations: stop here at the latest (the result is then flagged not converged).
        min_iterations: iterations before the epsilon test applies (the loss of the first
            steps can be flat while the clusters form).
        seed: seeds the initial weights; with it the result is deterministic on CPU (also
            with several boxes optimised at once in threads).
        precision: ``"float32"``, ``"bfloat16"`` (the network's forward pass under
            ``torch.autocast``; the loss and the argmax in float32) or ``"auto"``: bfloat16 on
            a CPU with AMX matrix units (Intel Sapphire Rapids and later), where it cuts the
            time per iteration by about 40 % (0.10 against 0.16 s on a CHAOS kidney box),
            float32 anywhere else. A departure from the paper
            for CPU time; see ``benchmarks/README.md`` for its effect on DSC.
    """

    n_blocks: int = 2
    channels: int = 50
    spatial_dims: int = 3
    continuity_weight: float = 5.0
    learning_rate: float = 0.01
    momentum: float = 0.9
    epsilon: float = 0.005
    max_iterations: int = 300
    min_iterations: int = 5
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, got {self.spatial_dims}")
        if not (self.continuity_weight >= 0 and self.learning_rate > 0 and self.epsilon >= 0):
            raise ValueError("continuity_weight and epsilon must be >= 0, learning_rate > 0")
        if not 1 <= self.min_iterations <= self.max_iterations:
            raise ValueError(f"expected 1 <= min_iterations <= max_iterations, got {self.min_iterations}, {self.max_iterations}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")


METHODS = ("cluster3d", "cluster2d", "otsu", "watershed")


@dataclass(frozen=True)
class UnsupervisedConfig(SpecConfig):
    """Settings of :class:`UnsupervisedKidneyPipeline`.

    Attributes:
        method: ``"cluster3d"`` (seed 001), ``"cluster2d"`` (its 2D ablation: each slice
            clustered on its own), ``"otsu"`` or ``"watershed"`` (the paper's baselines).
        roi: region-of-interest settings (:class:`kidneyseg.localize.ROIConfig`).
        cluster: clustering settings (:class:`kidneyseg.training.clustering.ClusterConfig`);
            ``spatial_dims`` follows ``method``.
        n4_iterations: N4 iterations per fitting level (paper: 2).
        n4_fitting_levels: N4 fitting levels (paper: 8).
        working_spacing_mm: each axis finer than this is block-averaged by the integer
            factor that brings it closest (at least 1) before clustering; labels are
            repeated back. A CPU-time departure from the paper, which clusters at native
            resolution on a GPU; ``0`` keeps native resolution.
        selection_radius_mm, selection_min_fraction, selection_min_contrast: ``radius_mm``,
            ``min_fraction`` and ``min_contrast`` of
            :func:`kidneyseg.postprocess.clusters.select_kidney_clusters`. ``min_fraction``
            is 0.4 with the clamp (chosen on the development cases 1, 2 and 5, 2026-12-01; it
            was 0.5 before the clamp kept the mask local).
        clamp_to_seed: clustering methods: keep the kidney mask within
            ``selection_radius_mm`` of the seed (then the component at the seed again), so a
            selected cluster that also covers a touching organ of the same brightness (the
            spleen above the left kidney, fluid-filled bowel) cannot carry the mask into it.
            ``False`` is the selection of 2026-11-22.
        selection_seed_share: with ``clamp_to_seed``, a cluster holding at least this
            fraction of the seed (in the slices it occupies) is kidney however far it
            extends (``seed_share`` of :func:`~kidneyseg.postprocess.clusters.select_kidney_clusters`;
            the clamp then cuts it); ``None`` leaves the rule out. Ignored without the clamp.
        registration_metric: ``"ncc"``, ``"mse"`` or ``"mi"`` for a second sequence.
        registration_max_samples: cap on the registration metric's random samples per level
            (``max_samples`` of :func:`kidneyseg.preprocess.registration.register_to`);
            ``None`` samples 20 % of every level. Default
            :data:`kidneyseg.preprocess.registration.MAX_SAMPLES` (5000).
    """

    method: str = "cluster3d"
    roi: ROIConfig = field(default_factory=ROIConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    n4_iterations: int = 2
    n4_fitting_levels: int = 8
    working_spacing_mm: float = 2.5
    selection_radius_mm: float = 10.0
    selection_min_fraction: float = 0.4
    selection_min_contrast: float = 0.3
    clamp_to_seed: bool = True
    selection_seed_share: float | None = 0.5
    registration_metric: str = "mi"
    registration_max_samples: int | None = MAX_SAMPLES

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        if self.registration_metric not in ("ncc", "mse", "mi"):
            raise ValueError(f"registration_metric: expected ncc, mse or mi, got {self.registration_metric!r}")
        if self.registration_max_samples is not None and self.registration_max_samples < 1:
            raise ValueError(f"registration_max_samples: expected None or >= 1, got {self.registration_max_samples}")
        if self.working_spacing_mm < 0 or self.selection_radius_mm < 0:
            raise ValueError("working_spacing_mm and selection_radius_mm must be >= 0")
        if not 0 <= self.selection_min_fraction <= 1:
            raise ValueError(f"selection_min_fraction: expected a value in [0, 1], got {self.selection_min_fraction}")
        if self.selection_seed_share is not None and not 0 < self.selection_seed_share <= 1:
            raise ValueError(f"selection_seed_share: expected None or in (0, 1], got {self.selection_seed_share}")
        dims = 2 if self.method == "cluster2d" else 3
        if self.cluster.spatial_dims != dims:
            object.__setattr__(self, "cluster", replace(self.cluster, spatial_dims=dims))


PAPER_DEPARTURES: dict[str, object] = {
    "working_spacing_mm": 0.0,  # section 3: clustering at native resolution (on a GPU)
    "clamp_to_seed": False,  # section 5: "we did not perform any additional postprocessing"
    "selection_seed_share": None,  # (only acts with the clamp)
}
"""What ``--preset paper`` changes in :class:`UnsupervisedConfig`; the cluster network also runs
in float32 (``ClusterConfig.precision``). Every other value seed 001 states is already the
default: N = 2 blocks of p = 50 channels (the ablation's most stable), lambda = 5,
epsilon = 0.005, SGD with momentum 0.9 and learning rate 0.01, N4 with 2 iterations and 8
fitting levels (sections 3 and 5)."""


def paper_config() -> UnsupervisedConfig:
    """``kidneyseg segment --pipeline unsupervised-cluster --preset paper``: seed 001's values
    (:data:`PAPER_DEPARTURES` plus float32). The paper's kidney class, "the first connected
    component class", is not defined further; kidneyseg's cluster selection (seed distance and
    contrast, :func:`kidneyseg.postprocess.clusters.select_kidney_clusters`) is kept, and so is
    its reduction to the component at the seed with holes filled, which is part of that choice."""
    base = UnsupervisedConfig()
    return replace(base, cluster=replace(base.cluster, precision="float32"), **PAPER_DEPARTURES)


def block_factors(spacing_mm: tuple[float, ...], working_mm: float) -> tuple[int, ...]:
    if working_mm <= 0:
        return (1,) * len(spacing_mm)
    return tuple(max(1, int(round(working_mm / s))) for s in spacing_mm)


def upsample_mask(mask: np.ndarray, factors: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of a block mean by ``factors``: linear interpolation of the mask with the blocks'
    centres aligned (``scipy.ndimage.zoom``, ``grid_mode=True``), thresholded at 0.5 and cut
    to ``shape`` (nearest-neighbour repetition would leave block steps on the surface)."""
    from scipy.ndimage import zoom

    if all(f == 1 for f in factors):
        return mask.astype(bool)[tuple(slice(0, s) for s in shape)]
    up = zoom(mask.astype(np.float32), factors, order=1, grid_mode=True, mode="grid-constant", cval=0.0)
    return (up >= 0.5)[tuple(slice(0, s) for s in shape)]


@dataclass
class Regions:
    """The pipeline's first steps on one image (:meth:`UnsupervisedKidneyPipeline.regions`).

    Attributes:
        image: the checked float32 input.
        canonical: ``image`` reoriented to RAS (original intensities).
        reorientation: how to go back to the input's axes.
        channels: float32 ``(X, Y, Z)`` arrays on ``canonical``'s grid: the N4-corrected
            image, then the registered, N4-corrected secondary image if one was given.
        found: the kidney boxes (:func:`kidneyseg.localize.detect_kidney_rois` on
            ``channels[0]``).
    """

    image: Image
    canonical: Image
    reorientation: Reorientation
    channels: list[np.ndarray]
    found: ROIResult
