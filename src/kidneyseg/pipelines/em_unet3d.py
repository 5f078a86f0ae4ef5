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

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import Image, check_volume, from_canonical, to_canonical
from ..labels import MR_KIDNEYS
from ..localize.em import Box, EMConfig, body_mask, localise, slice_axis_of
from ..preprocess.super_resolution import SRConfig
from .result import Result, volumetric_result

log = logging.getLogger(__name__)

PIPELINE = "em-unet3d"
LOCALISERS = ("em", "body", "none")
WEIGHTS, CONFIG, SR_WEIGHTS = "model.pt", "config.json", "super_resolution.pt"


@dataclass(frozen=True)
class EMUNetConfig:
    """Everything that determines an ``em-unet3d`` model (saved as ``config.json``).

    Attributes:
        localiser: ``"em"``, ``"body"`` or ``"none"`` (see the module docstring).
        em: :class:`~kidneyseg.localize.em.EMConfig`; training chooses its ``class_ranks``
            and ``keep_components`` on the training masks.
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

    localiser: str = "em"
    em: EMConfig = field(default_factory=EMConfig)
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
        if self.localiser not in LOCALISERS:
            raise ValueError(f"localiser: expected one of {LOCALISERS}, got {self.localiser!r}")
        if len(self.input_size) != 3 or self.input_size[0] != self.input_size[1]:
            raise ValueError(f"input_size: expected (N, N, S), got {self.input_size}")
        down = 2 ** (len(self.channels) - 1)
        if any(s % down for s in self.input_size):
            raise ValueError(f"input_size {self.input_size}: every axis must be a multiple of {down}")
        if self.super_resolution < 1:
            raise ValueError("super_resolution: expected a factor >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pipeline"] = PIPELINE
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EMUNetConfig":
        d = {k: v for k, v in d.items() if k != "pipeline"}
        d["em"] = EMConfig.from_dict(d.get("em", {}))
        d["sr"] = SRConfig(**d.get("sr", {}))
        for key in ("input_size", "channels", "histogram_references"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


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
    from scipy import ndimage

    from ..localize.em import box_from_mask

    body = body_mask(volume)
    lab, n = ndimage.label(body)
    if n == 0:
        return None
    largest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    return box_from_mask(lab == largest, 2, margin_px)


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


class EMUNetPipeline:
    """Trained ``em-unet3d`` model: build with :meth:`load`, call :meth:`segment` per volume."""

    name = PIPELINE

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
        if model is None:
            raise InputError("--pipeline em-unet3d: no model is shipped for it; pass --model FOLDER "
                             "(train one with: kidneyseg train --pipeline em-unet3d)")
        folder = Path(model)
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise InputError(f"{folder}: not an em-unet3d model folder (needs {WEIGHTS} and {CONFIG})")
        raw = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        if raw.get("pipeline") != PIPELINE:
            raise InputError(f"{folder / CONFIG}: a {raw.get('pipeline', 'mr-t2-unet')!r} model, not em-unet3d")
        config = EMUNetConfig.from_dict(raw)
        net = build_network(config)
        net.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
        sr = None
        if config.super_resolution > 1:
            from ..preprocess.super_resolution import ThroughPlaneSR

            sr = ThroughPlaneSR.from_state(torch.load(folder / SR_WEIGHTS, map_location="cpu", weights_only=True))
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

__all__ = ["EMUNetConfig", "EMUNetPipeline", "LOCALISERS", "Prepared", "build_network", "find_box", "input_size",
           "network_input", "prepare"]
