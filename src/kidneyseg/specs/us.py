"""Method spec of ``us-ensemble`` (seed 003): its training config and sample type, shared by the
pipeline (:mod:`kidneyseg.pipelines.us_ensemble`) and the trainer (:mod:`kidneyseg.training.us`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..arrays import largest_components
from ..models.us_ensemble import MEMBERS, SEED_003_MEMBERS
from ..preprocess.ultrasound import Letterbox, scan_sector
from .base import SpecConfig

PIPELINE_NAME = "us-ensemble"


PAPER: dict[str, object] = {
    "members": SEED_003_MEMBERS,  # DeepLabV3+ on ResNet-18 and ResNet-152, and LinkNet
    "mode": "end-to-end",  # "The triple concatenated model underwent extensive fine-tuning"
    "learning_rate": 1e-3,  # Adam, learning rate 0.001
    "epochs": 100,  # "a total of 100 epochs"
}
"""``kidneyseg train us-ensemble --preset paper``: every :class:`USTrainConfig` value seed 003
states (its "Proposed model" and "Training" text). It differs from the defaults in ``mode``:
the paper trains the concatenated model as a whole; the default trains each member, then the
fusion layer (``staged``). The paper's encoders start from ImageNet weights, which kidneyseg
never downloads: give ``--encoder-weights`` with torchvision's ImageNet ResNet files (see
docs/pipelines.md). Not stated, so kept: image size, batch size, augmentation."""


@dataclass(frozen=True)
class USTrainConfig(SpecConfig):
    """Everything that determines a trained ultrasound ensemble.

    Attributes:
        members: member names (keys of :data:`~kidneyseg.models.us_ensemble.MEMBERS`).
        mode: ``"staged"`` or ``"end-to-end"`` (module docstring).
        image_size: ``(H, W)`` canvas the network sees (letterboxed, aspect kept);
            multiples of 32.
        epochs: epochs per member (staged) or of the whole model (end-to-end); seed 003: 100.
        fusion_epochs: epochs of fusion-layer training (staged only).
        learning_rate: Adam learning rate (seed 003: 1e-3).
        batch_size: images per step.
        augment: horizontal flips (a probe may be held either way round; depth is never
            flipped) and :func:`~kidneyseg.preprocess.ultrasound.speckle_augment`.
        seed: seeds weights, batch order and augmentation.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        num_threads: CPU threads for torch (0 = torch's default).
        label_map: output value -> name (a binary kidney mask).
        encoder_weights: member name -> local file of ImageNet encoder weights to start
            from (:func:`~kidneyseg.models.us_ensemble.load_encoder_weights`); empty: random.
    """

    members: tuple[str, ...] = SEED_003_MEMBERS
    mode: str = "staged"
    image_size: tuple[int, int] = (256, 256)
    epochs: int = 100
    fusion_epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 8
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    label_map: dict[int, str] = dataclasses.field(default_factory=lambda: {1: "kidney"})
    encoder_weights: dict[str, str] = dataclasses.field(default_factory=dict)
    pipeline: str = PIPELINE_NAME

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "label_map", {int(k): str(v) for k, v in self.label_map.items()})
        unknown = [m for m in self.members if m not in MEMBERS]
        if not self.members or unknown:
            raise ValueError(f"members: expected names among {', '.join(MEMBERS)}, got {list(self.members)}")
        if self.mode not in ("staged", "end-to-end"):
            raise ValueError(f"mode: expected 'staged' or 'end-to-end', got {self.mode!r}")
        if len(self.image_size) != 2 or any(v < 32 or v % 32 for v in self.image_size):
            raise ValueError(f"image_size: expected two multiples of 32, got {self.image_size}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.fusion_epochs < 0 or self.learning_rate <= 0:
            raise ValueError("fusion_epochs must be >= 0 and learning_rate > 0")
        object.__setattr__(self, "encoder_weights", {str(k): str(v) for k, v in self.encoder_weights.items()})
        if set(self.encoder_weights) - set(self.members):
            raise ValueError(f"encoder_weights: names {sorted(set(self.encoder_weights) - set(self.members))} are not members")
        if self.label_map != {1: "kidney"}:
            raise ValueError(f"label_map: only a binary kidney mask is supported, got {self.label_map}")


@dataclass
class USSample:
    """A training image: ``image`` ``float32`` ``(H, W)`` in [0, 1], ``mask`` ``bool``
    ``(H, W)``, optional ``sector`` ``bool`` ``(H, W)``, and a name."""

    image: np.ndarray
    mask: np.ndarray
    sector: np.ndarray | None = None
    name: str = ""


def postprocess_mask(probability: np.ndarray, sector: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, int]:
    """Threshold, keep the sector, keep the largest component, fill its holes.

    Returns:
        (``bool`` mask, number of components before selection). Library: scipy.ndimage.
    """
    from scipy import ndimage as ndi

    fg = (probability >= threshold) & sector
    n = int(ndi.label(fg)[1])
    return ndi.binary_fill_holes(largest_components(fg)), n


def ensemble_probabilities(model: torch.nn.Module, image_size: tuple[int, int], image: np.ndarray,
                           device: torch.device, members: bool = False) -> dict[str, np.ndarray]:
    """Kidney probability of a :class:`~kidneyseg.models.us_ensemble.TripleConcatenated` on the
    input grid, ``float32`` ``(H, W)``: letterboxed to ``image_size`` (aspect kept), sigmoid,
    back to the input's size (bilinear).

    Args:
        model: the ensemble, eval mode, on ``device``.
        image: ``float32`` ``(H, W)`` in [0, 1].
        members: also return each member's probability (keys are member names).

    Returns:
        ``{"fused": p, <member>: p, ...}``.
    """
    lb = Letterbox(tuple(image.shape), image_size)
    x = torch.from_numpy(lb.forward(image.astype(np.float32), order=1))[None, None].to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = model.member_logits(x)
        fused = model.fuse(logits)
    out = {"fused": fused}
    if members:
        out.update(dict(zip(model.member_names, logits)))
    return {k: lb.back(torch.sigmoid(v)[0, 0].float().cpu().numpy(), order=1) for k, v in out.items()}


def score_samples(model: torch.nn.Module, image_size: tuple[int, int], samples, device: torch.device) -> dict[str, float]:
    """Mean Dice of the fused model and of each member on ``samples`` (:class:`USSample`),
    after the pipeline's post-processing (:func:`postprocess_mask` inside the scan sector)."""
    from ..metrics.overlap import dice

    scores: dict[str, list[float]] = {}
    for s in samples:
        sector = s.sector if s.sector is not None else scan_sector(s.image)
        for name, p in ensemble_probabilities(model, image_size, s.image, device, members=True).items():
            m, _ = postprocess_mask(p, sector)
            scores.setdefault(name, []).append(dice(m, s.mask.astype(bool)))
    return {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
