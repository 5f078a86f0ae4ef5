"""Named pipelines. An explicit registry: name -> (description, factory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .result import Result


@dataclass(frozen=True)
class PipelineInfo:
    """A registered pipeline: its name, modality, what it does and how to build it."""

    name: str
    modality: str
    description: str
    factory: Callable[..., object]


def configure_pipeline(pipe, keep_largest: bool = True, tta: bool = True, allow_ct: bool = False):
    """Apply the ``segment`` options every pipeline shares: ``keep_largest`` (largest
    component per kidney) and ``tta=False`` (one plain network pass instead of the model's
    test-time augmentation, for pipelines that have one). Returns ``pipe``."""
    pipe.keep_largest = keep_largest
    if not tta and hasattr(pipe, "disable_tta"):
        pipe.disable_tta()
    if allow_ct:
        if not hasattr(pipe, "allow_ct"):
            from ..errors import InputError

            raise InputError(f"--allow-ct: pipeline {getattr(pipe, 'name', type(pipe).__name__)} does not check for CT "
                             "input, so there is nothing to allow")
        pipe.allow_ct = True
    return pipe


def _mr_t2_factory(model: str | None = None, device: str = "auto"):
    from .mr_t2 import MRKidneyPipeline

    return MRKidneyPipeline.load(model, device)


def _mr_multiprotocol_factory(model: str | None = None, device: str = "auto"):
    from ..models.store import default_model_dir
    from .mr_t2 import MRKidneyPipeline

    pipe = MRKidneyPipeline.load(model or str(default_model_dir("mr_multiprotocol_kidney")), device)
    pipe.name = "mr-multiprotocol-unet"
    return pipe


def _unsupervised_factory(model: str | None = None, device: str = "auto"):
    from .unsupervised import UnsupervisedKidneyPipeline

    return UnsupervisedKidneyPipeline.load(model, device)


def _us_ensemble_factory(model: str | None = None, device: str = "auto"):
    from .us_ensemble import USEnsemblePipeline

    return USEnsemblePipeline.load(model, device)


def _em_unet3d_factory(model: str | None = None, device: str = "auto"):
    from .em_unet3d import EMUNetPipeline

    return EMUNetPipeline.load(model, device)


def _kits_unet3d_factory(model: str | None = None, device: str = "auto"):
    from .kits_unet3d import KitsUNetPipeline

    return KitsUNetPipeline.load(model, device)


def _c2f_cascade_factory(model: str | None = None, device: str = "auto"):
    from .c2f_cascade import C2FCascadePipeline

    return C2FCascadePipeline.load(model, device)


PIPELINES: dict[str, PipelineInfo] = {
    "mr-t2-unet": PipelineInfo(
        "mr-t2-unet", "MR",
        "2.5D MONAI U-Net for left/right kidneys on T2-weighted abdominal MRI (shipped model, trained on CHAOS)",
        _mr_t2_factory,
    ),
    "mr-multiprotocol-unet": PipelineInfo(
        "mr-multiprotocol-unet", "MR",
        "2D MONAI U-Net trained on images synthesised from label maps (random contrast, plane and slice "
        "thickness) and applied in the scan's acquisition plane: coronal, T1-weighted, gradient-echo MRI "
        "(shipped model, trained on CHAOS; see its model card for where it was validated)",
        _mr_multiprotocol_factory,
    ),
    "unsupervised-cluster": PipelineInfo(
        "unsupervised-cluster", "MR",
        "no model: N4, kidney boxes by threshold + morphology, a small 3D CNN clustered per box (seed 001); "
        "optional second sequence (--secondary), registered and fused",
        _unsupervised_factory,
    ),
    "us-ensemble": PipelineInfo(
        "us-ensemble", "US",
        "2D B-mode ultrasound: DeepLabV3+ (ResNet-18, ResNet-152) and LinkNet fused by a convolution (seed 003); "
        "PNG/JPEG/DICOM frames; no shipped model, needs --model",
        _us_ensemble_factory,
    ),
    "em-unet3d": PipelineInfo(
        "em-unet3d", "MR",
        "EM localisation (12 classes + MRF, on FA or the image) then a small 3D U-Net on the crop (seed 000); "
        "MD or any 3D MRI; --secondary FA map; no shipped model, needs --model",
        _em_unet3d_factory,
    ),
    "kits-unet3d": PipelineInfo(
        "kits-unet3d", "CT",
        "nnU-Net-style 3D U-Net (MONAI DynUNet from a dataset plan) for kidney, tumour and cyst on contrast CT "
        "(seed 002); sliding window, KiTS regions; no shipped model, needs --model",
        _kits_unet3d_factory,
    ),
    "c2f-cascade": PipelineInfo(
        "c2f-cascade", "CT",
        "coarse-to-fine 2D U-Nets for the kidneys (coarse axial, abnormal-count correction on sagittal crops, fine "
        "crops), then a 3D FCN and a two-channel 2D CNN for the tumour (seed 004); no shipped model, needs --model",
        _c2f_cascade_factory,
    ),
}
DEFAULT_PIPELINE = "mr-t2-unet"


def get_pipeline(name: str, model: str | None = None, device: str = "auto"):
    """Instantiate a registered pipeline.

    Raises:
        InputError: unknown pipeline name.
    """
    from ..errors import InputError

    if name not in PIPELINES:
        raise InputError(f"--pipeline: unknown pipeline {name!r} (available: {', '.join(PIPELINES)})")
    return PIPELINES[name].factory(model=model, device=device)


__all__ = ["PIPELINES", "DEFAULT_PIPELINE", "PipelineInfo", "Result", "configure_pipeline", "get_pipeline"]
