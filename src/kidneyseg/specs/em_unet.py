"""Method spec of ``em-unet3d`` (seed 000): its config, network, model-folder file names, input
preparation and localisation box, shared by the pipeline (:mod:`kidneyseg.pipelines.em_unet3d`)
and the trainer (:mod:`kidneyseg.training.em_unet`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ..arrays import largest_components
from ..errors import InputError
from ..io import Image, from_canonical, to_canonical
from ..localize.em import Box, EMConfig, body_mask, localise, slice_axis_of
from ..preprocess.super_resolution import SRConfig
from .base import SpecConfig

PIPELINE = "em-unet3d"
LOCALISERS = ("em", "body", "none")
WEIGHTS, CONFIG, SR_WEIGHTS = "model.pt", "config.json", "super_resolution.pt"


PAPER: dict[str, object] = {
    "localiser": "em",  # II.B: EM on the FA map localises the kidney
    "em": {"n_classes": 12, "em_iterations": 7, "mrf_beta": 0.05, "margin_px": 5},  # II.B, II.D
    "input_size": (64, 64, 16),  # II.D: crops resized to 64 x 64 x 16 (64 x 64 x 64 super-resolved)
    "super_resolution": 5,  # II.E: 110 x 110 x 15 -> 110 x 110 x 75
    "channels": (16, 32, 64, 128),  # III: half the kernels of the 3D U-Net (32-64-128-256)
    "augment_histogram": True,  # II.C: histogram matching to another data set
    "augment_geometric": True,  # II.C: 90-degree rotation, left-right and up-down flips
}
"""``kidneyseg train em-unet3d --preset paper``: every :class:`EMUNetConfig` value seed 000
(lupus nephritis mice, DTI) states, by section. It differs from the defaults in
``super_resolution`` (default 1: the through-plane network is trained on the case's own
in-plane slices, which adds training time; docs/pipelines.md). The paper's split is by animal:
``--cross-validate`` with ``--subjects`` or ``--subject-pattern``. The kidney's EM class is
picked by hand in the paper: add ``"em_class_choice": "manual"`` and ``em.class_ranks`` in
``--config`` for that; the preset keeps the automatic choice, which needs no look at the data.
Not settable: the paper's epochs, batch size and learning rate (not stated)."""


@dataclass(frozen=True)
class EMUNetConfig(SpecConfig):
    """Everything that determines an ``em-unet3d`` model (saved as ``config.json``).

    Attributes:
        localiser: ``"em"``, ``"body"`` or ``"none"`` (see the module docstring).
        em: :class:`~kidneyseg.localize.em.EMConfig`; with ``em_class_choice="auto"``
            training chooses its ``class_ranks`` and ``keep_components`` on the training masks.
        em_class_choice: ``"auto"`` (kidneyseg: the EM classes that best cover the training
            masks) or ``"manual"``: ``em.class_ranks`` and ``em.keep_components`` are used as
            given, as seed 000 picks "one of the tissue classes" by hand (section II.B).
        input_size: network input ``(in-plane, in-plane, slices)``; in-plane equal (the
            90-degree rotation augmentation needs a square).
        super_resolution: through-plane factor (1 = off; the paper: 5).
        sr: :class:`~kidneyseg.preprocess.super_resolution.SRConfig` when it is on.
        channels: U-Net feature maps per level (half of the 3D U-Net's 32-64-128-256).
        num_res_units: residual units per block (MONAI UNet; 2 gives two convolutions per
            level, as the 3D U-Net).
        epochs: passes over the augmented training crops.
        batch_size: crops per step.
        learning_rate: Adam.
        augment_histogram: add a histogram-matched copy of every training crop
            (scikit-image ``match_histograms``; section II.C).
        histogram_references: image files whose intensity distribution is matched (the paper
            used another data set); empty: another training case, chosen by the seed.
        augment_geometric: add 90-degree in-plane rotation and the two in-plane flips
            (labels are one "kidney" class, so flips swap nothing).
        threshold: probability above which a voxel is kidney.
        input_kind: free text naming the network input (``"MD"``, ``"T2"``).
        seed: seeds numpy and torch.
        num_threads: torch intra-op threads (0 = torch's default).
    """

    JSON_EXTRA: ClassVar[dict] = {"pipeline": PIPELINE}  # config.json names the pipeline that reads it

    localiser: str = "em"
    em: EMConfig = field(default_factory=EMConfig)
    em_class_choice: str = "auto"
    input_size: tuple[int, int, int] = (64, 64, 16)
    super_resolution: int = 1
    sr: SRConfig = field(default_factory=SRConfig)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 2
    epochs: int = 60
    batch_size: int = 4
    learning_rate: float = 1e-3
    augment_histogram: bool = True
    histogram_references: tuple[str, ...] = ()
    augment_geometric: bool = True
    threshold: float = 0.5
    input_kind: str = ""
    seed: int = 0
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.em_class_choice not in ("auto", "manual"):
            raise ValueError(f"em_class_choice: expected 'auto' or 'manual', got {self.em_class_choice!r}")
        if self.localiser not in LOCALISERS:
            raise ValueError(f"localiser: expected one of {LOCALISERS}, got {self.localiser!r}")
        if len(self.input_size) != 3 or self.input_size[0] != self.input_size[1]:
            raise ValueError(f"input_size: expected (N, N, S), got {self.input_size}")
        down = 2 ** (len(self.channels) - 1)
        if any(s % down for s in self.input_size):
            raise ValueError(f"input_size {self.input_size}: every axis must be a multiple of {down}")
        if self.super_resolution < 1:
            raise ValueError("super_resolution: expected a factor >= 1")


def build_network(config: EMUNetConfig) -> torch.nn.Module:
    """The MONAI 3D U-Net of ``config``: ``(B, 1, N, N, S)`` float32 -> ``(B, 1, N, N, S)`` logits."""
    from ..models.unet import build_unet3d

    return build_unet3d(1, 1, config.channels, [(2, 2, 2)] * (len(config.channels) - 1), config.num_res_units)


@dataclass
class Prepared:
    """One volume on the working grid: RAS+, slice axis last.

    Attributes:
        array: ``(X, Y, S)`` float32 network input.
        loc: ``(X, Y, S)`` float32 localisation map.
        affine: working grid's voxel-to-RAS+ mm matrix.
        spacing_mm: working voxel size.
        undo: callable mapping a working-grid array back to the input's grid.
    """

    array: np.ndarray
    loc: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    undo: object


def prepare(image: Image, localisation: Image | None = None) -> Prepared:
    """Reorient ``image`` (and its localisation map) to the working grid.

    Raises:
        InputError: the localisation map's grid (shape or affine) differs from the image's.
    """
    canon, reo = to_canonical(image)
    axis = slice_axis_of(canon.spacing_mm)
    if localisation is not None:
        if localisation.shape != image.shape or not np.allclose(localisation.affine, image.affine, atol=1e-3):
            raise InputError(f"{localisation.source or 'localisation map'}: grid {localisation.shape} differs from "
                             f"the image's {image.shape} (or another affine); FA and MD from one tensor fit share "
                             "a grid; register other maps first")
        loc_c = to_canonical(localisation)[0].array
    else:
        loc_c = canon.array
    perm = [a for a in range(3) if a != axis] + [axis]
    affine = canon.affine[:, perm + [3]]
    spacing = tuple(float(canon.spacing_mm[a]) for a in perm)

    def undo(arr: np.ndarray) -> np.ndarray:
        return from_canonical(np.moveaxis(arr, 2, axis), reo)

    return Prepared(np.moveaxis(canon.array, axis, 2).astype(np.float32),
                    np.moveaxis(loc_c, axis, 2).astype(np.float32), affine, spacing, undo)


def body_box(volume: np.ndarray, margin_px: int) -> Box | None:
    """Box of the largest connected component of the Otsu body mask (the paper's "CC" row)."""
    from ..localize.em import box_from_mask

    body = body_mask(volume)
    if not body.any():
        return None
    return box_from_mask(largest_components(body), 2, margin_px)


def find_box(prep: Prepared, config: EMUNetConfig, ranks: np.ndarray | None = None) -> tuple[Box | None, np.ndarray | None]:
    """The crop box of ``config.localiser`` on the working grid (slice axis 2), and for
    ``"em"`` the kidney-vicinity voxels (the "EM alone" segmentation)."""
    from ..preprocess.crop import full_box

    if config.localiser == "none":
        return full_box(prep.array.shape, 2), None
    if config.localiser == "body":
        return body_box(prep.array, config.em.margin_px), None
    box, vicinity = localise(prep.loc, prep.spacing_mm, config.em, ranks=ranks)
    return box, vicinity


def network_input(array: np.ndarray, box: Box, config: EMUNetConfig) -> np.ndarray:
    """Crop, z-score and resize to ``config.input_size`` (or its super-resolved size)."""
    from ..preprocess.crop import crop_resize
    from ..preprocess.normalise import zscore_percentile

    crop = np.asarray(array[box.slices], dtype=np.float32)
    if np.ptp(crop) == 0:
        raise InputError("the localised box is constant; nothing to segment")
    norm = zscore_percentile(crop)
    inner = Box((0, 0, 0), crop.shape, 2)
    return crop_resize(norm, inner, input_size(config))


def input_size(config: EMUNetConfig) -> tuple[int, int, int]:
    """The network input size: ``input_size``, with 64 slices after super-resolution."""
    n, _, s = config.input_size
    return (n, n, 64) if config.super_resolution > 1 and s < 64 else tuple(config.input_size)
