"""Seed 003's "triple concatenated" ultrasound model, built from segmentation_models_pytorch.

Members (each a 2D encoder-decoder with ``in_channels`` 1 and ``classes`` output logits):

* ``deeplabv3plus_resnet18``: DeepLabV3+ (Chen et al., ECCV 2018) on ResNet-18;
* ``deeplabv3plus_resnet152``: DeepLabV3+ on ResNet-152;
* ``linknet_resnet18``: LinkNet (Chaurasia & Culurciello, 2017) on ResNet-18, the encoder of
  the original LinkNet paper (seed 003 names no encoder for it).

The fused model concatenates the members' logits channel-wise (``3 * classes`` channels)
and maps them to ``classes`` logits with one 3 x 3 convolution (seed 003 section 2: "the
three outputs concatenated ... followed by the addition of a convolutional layer"; the
kernel size is not given, 3 x 3 lets the fusion use a pixel's neighbours).

Input ``(B, 1, H, W)`` float32; ``H`` and ``W`` multiples of 32 (LinkNet's encoder
downsamples five times). Output ``(B, classes, H, W)`` logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError

MEMBERS: dict[str, tuple[str, str]] = {
    "deeplabv3plus_resnet18": ("DeepLabV3Plus", "resnet18"),
    "deeplabv3plus_resnet152": ("DeepLabV3Plus", "resnet152"),
    "linknet_resnet18": ("Linknet", "resnet18"),
}
"""Member name -> (segmentation_models_pytorch architecture, encoder)."""

SEED_003_MEMBERS = ("deeplabv3plus_resnet18", "deeplabv3plus_resnet152", "linknet_resnet18")


def build_member(name: str, classes: int = 1, encoder_weights: str | Path | None = None) -> nn.Module:
    """One member network with random weights, or with a local encoder state dict.

    Args:
        name: a key of :data:`MEMBERS`.
        classes: output channels (1 for a binary kidney mask).
        encoder_weights: ``None`` (random) or a local ``.pth`` file with ImageNet weights of
            the encoder (torchvision's ResNet naming; ``fc.*`` is ignored). A 3-channel first
            convolution is summed over its input channels to fit grey-scale input (what
            segmentation_models_pytorch does for its own downloads). Nothing is downloaded.

    Raises:
        InputError: unknown member, unreadable weights file, or weights that do not fit.
    """
    from ..optional import require

    smp = require("segmentation_models_pytorch", "pipeline us-ensemble")

    if name not in MEMBERS:
        raise InputError(f"member: unknown {name!r} (available: {', '.join(MEMBERS)})")
    arch, encoder = MEMBERS[name]
    model = getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=classes)
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict into ``model.encoder`` (see :func:`build_member`)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"--encoder-weights: {path}: no such file") from None
    except Exception as exc:
        raise InputError(f"--encoder-weights: {path}: not a PyTorch state dict ({exc.__class__.__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    conv = state.get("conv1.weight")
    if conv is not None and conv.shape[1] == 3:
        state["conv1.weight"] = conv.sum(dim=1, keepdim=True)
    own = model.encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise InputError(f"--encoder-weights: {path}: does not fit the encoder ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(wrong)} wrongly shaped tensors, "
                         f"e.g. {(missing + unexpected + wrong)[:2]})")
    # nn.Module's own loader: segmentation_models_pytorch's encoders override it and return None
    nn.Module.load_state_dict(model.encoder, state, strict=True)


class TripleConcatenated(nn.Module):
    """Members' logits concatenated and fused by one convolution (seed 003, Figure 1).

    Args:
        members: member names (keys of :data:`MEMBERS`); seed 003 uses
            :data:`SEED_003_MEMBERS`. One member gives a fused model over one network.
        classes: output channels.
        encoder_weights: optional local encoder weights, one file per member name.
    """

    def __init__(self, members: tuple[str, ...] = SEED_003_MEMBERS, classes: int = 1,
                 encoder_weights: dict[str, str | Path] | None = None) -> None:
        super().__init__()
        weights = encoder_weights or {}
        self.member_names = tuple(members)
        self.members = nn.ModuleDict({m: build_member(m, classes, weights.get(m)) for m in members})
        self.fusion = nn.Conv2d(len(members) * classes, classes, kernel_size=3, padding=1)
        with torch.no_grad():  # start as the members' mean, so fusion training begins from the average
            self.fusion.weight.zero_()
            for i in range(len(members)):
                for c in range(classes):
                    self.fusion.weight[c, i * classes + c, 1, 1] = 1.0 / len(members)
            self.fusion.bias.zero_()

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's ``(B, classes, H, W)`` logits, in member order."""
        return [self.members[m](x) for m in self.member_names]

    def fuse(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate member logits and apply the fusion convolution."""
        return self.fusion(torch.cat(logits, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> fused ``(B, classes, H, W)`` logits.

        Raises:
            ValueError: ``H`` or ``W`` not a multiple of 32.
        """
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"input size {tuple(x.shape[-2:])}: height and width must be multiples of 32")
        return self.fuse(self.member_logits(x))


__all__ = ["MEMBERS", "SEED_003_MEMBERS", "TripleConcatenated", "build_member", "load_encoder_weights"]
