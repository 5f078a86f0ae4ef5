"""Named pipelines. An explicit registry: name -> :class:`PipelineSpec` (capabilities and the
implementing class, which fulfils :class:`kidneyseg.pipelines.base.Pipeline`)."""

from __future__ import annotations

from ..labels import KIDNEY_TUMOUR, KITS, MR_KIDNEYS, US_KIDNEY
from .result import Result
from .spec import PipelineSpec


PipelineInfo = PipelineSpec
"""The earlier name of :class:`PipelineSpec`."""


def check_segment_options(name: str, *, tta: bool = True, keep_largest: bool = True, secondary: bool = False,
                          allow_ct: bool = False, report: bool = False, resume: bool = False, engine: str = "local",
                          series: str | None = None, volume: int | None = None, output_type: str = "nifti", manifest: bool = False,
                          pixel_spacing: bool = False, save_probabilities: bool = False,
                          preset: str | None = None) -> None:
    """Refuse a ``segment`` option that pipeline ``name`` would not act on, before anything is
    read or loaded (arguments are the options as given; defaults mean "not given").

    Raises:
        InputError: one line naming the option and the pipeline (exit 2); an unknown pipeline.
    """
    from ..errors import InputError

    if name not in PIPELINES:
        raise InputError(f"--pipeline: unknown pipeline {name!r} (available: {', '.join(PIPELINES)})")
    info = PIPELINES[name]
    frames = "segments 2D ultrasound frames into PNG masks"
    given = {  # flag: (given, honoured by this pipeline, why not)
        "--no-tta": (not tta, info.tta, "has no test-time augmentation to turn off"),
        "--keep-all-components": (not keep_largest, info.keep_largest,
                                  "does not keep only the largest components, so there is nothing to turn off"),
        "--secondary": (secondary, info.secondary, "takes one image"),
        "--allow-ct": (allow_ct, info.allow_ct, "does not check for CT input, so there is nothing to allow"),
        "--pixel-spacing-mm": (pixel_spacing, not info.volumetric, "reads the spacing from its 3D input files"),
        "--report": (report, info.volumetric, frames),
        "--resume": (resume, info.volumetric, frames),
        "--manifest": (manifest, info.volumetric, frames),
        "--engine ray": (engine == "ray", info.volumetric, frames),
        "--series": (series is not None, info.volumetric, frames),
        "--volume": (volume is not None, info.volumetric, frames),
        "--output-type": (output_type != "nifti", info.volumetric, frames),
        "--save-probabilities": (save_probabilities, info.probabilities, "has no probability map to save"),
    }
    for flag, (used, supported, why) in given.items():
        if used and not supported:
            raise InputError(f"{flag}: pipeline {name} {why}")
    info.check_preset(preset)


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


def _mr_multiprotocol_factory(model: str | None = None, device: str = "auto"):
    from .mr_t2 import MRKidneyPipeline

    return MRKidneyPipeline.load(str(PIPELINES["mr-multiprotocol-unet"].model_folder(model)), device,
                                 "mr-multiprotocol-unet")


PIPELINES: dict[str, PipelineSpec] = {
    "mr-auto": PipelineSpec(
        "mr-auto", "MR",
        "MR kidneys with the shipped model chosen per scan: mr-multiprotocol-unet's for axial scans covering the "
        "abdomen (>= 150 mm) and coronal, sagittal and near-isotropic scans, mr-t2-unet's for axial slabs it is "
        "confident on (each case records which model and why)",
        "kidneyseg.pipelines.mr_auto:MRAutoPipeline", MR_KIDNEYS, trainable=False, tta=True, allow_ct=True,
        probabilities=True, routes=("mr-t2-unet", "mr-multiprotocol-unet"),
    ),
    "mr-t2-unet": PipelineSpec(
        "mr-t2-unet", "MR",
        "2.5D MONAI U-Net for left/right kidneys on T2-weighted abdominal MRI (shipped model, trained on CHAOS)",
        "kidneyseg.pipelines.mr_t2:MRKidneyPipeline", MR_KIDNEYS, tta=True, allow_ct=True,
        shipped_model="mr_t2_kidney", probabilities=True,
    ),
    "mr-multiprotocol-unet": PipelineSpec(
        "mr-multiprotocol-unet", "MR",
        "2D MONAI U-Net trained on images synthesised from label maps (random contrast, plane and slice "
        "thickness) and applied in the scan's acquisition plane: coronal, T1-weighted, gradient-echo MRI "
        "(shipped model, trained on CHAOS; see its model card for where it was validated)",
        "kidneyseg.pipelines.mr_t2:MRKidneyPipeline", MR_KIDNEYS, tta=True, allow_ct=True,
        shipped_model="mr_multiprotocol_kidney", probabilities=True, factory=_mr_multiprotocol_factory,
    ),
    "unsupervised-cluster": PipelineSpec(
        "unsupervised-cluster", "MR",
        "no model: N4, kidney boxes by threshold + morphology, a small 3D CNN clustered per box (seed 001); "
        "optional second sequence (--secondary), registered and fused",
        "kidneyseg.pipelines.unsupervised:UnsupervisedKidneyPipeline", MR_KIDNEYS, trainable=False,
        keep_largest=False, secondary=True, presets={"paper": "kidneyseg.specs.unsupervised:paper_config"},
    ),
    "us-ensemble": PipelineSpec(
        "us-ensemble", "US",
        "2D B-mode ultrasound: DeepLabV3+ (ResNet-18, ResNet-152) and LinkNet fused by a convolution (seed 003); "
        "PNG/JPEG/DICOM frames; no shipped model, needs --model",
        "kidneyseg.pipelines.us_ensemble:USEnsemblePipeline", US_KIDNEY, spatial_dims=2, volumetric=False,
    ),
    "em-unet3d": PipelineSpec(
        "em-unet3d", "MR",
        "EM localisation (12 classes + MRF, on FA or the image) then a small 3D U-Net on the crop (seed 000); "
        "MD or any 3D MRI; --secondary FA map; no shipped model, needs --model",
        "kidneyseg.pipelines.em_unet3d:EMUNetPipeline", MR_KIDNEYS, secondary=True,
    ),
    "kits-unet3d": PipelineSpec(
        "kits-unet3d", "CT",
        "nnU-Net-style 3D U-Net (MONAI DynUNet from a dataset plan) for kidney, tumour and cyst on contrast CT "
        "(seed 002); sliding window, KiTS regions; no shipped model, needs --model",
        "kidneyseg.pipelines.kits_unet3d:KitsUNetPipeline", KITS, tta=True,
    ),
    "c2f-cascade": PipelineSpec(
        "c2f-cascade", "CT",
        "coarse-to-fine 2D U-Nets for the kidneys (coarse axial, abnormal-count correction on sagittal crops, fine "
        "crops), then a 3D FCN and a two-channel 2D CNN for the tumour (seed 004); no shipped model, needs --model",
        "kidneyseg.pipelines.c2f_cascade:C2FCascadePipeline", KIDNEY_TUMOUR, keep_largest=False,
    ),
}
DEFAULT_PIPELINE = "mr-auto"
"""The pipeline a run without ``--pipeline`` uses (and no ``--model``: see :func:`default_pipeline`)."""


def default_pipeline(model: object = None) -> str:
    """The pipeline a run uses when none is named: :data:`DEFAULT_PIPELINE` (``mr-auto``, the
    shipped MR models chosen per scan); with a model folder, ``mr-t2-unet``, which reads MR
    U-Net folders of either recipe (``mr-auto`` takes no folder; it was the default before
    2026-12-03)."""
    return DEFAULT_PIPELINE if model is None else "mr-t2-unet"


def model_folders(name: str, model: str | None = None):
    """The model folder(s) a run of pipeline ``name`` reads, for its provenance
    (:func:`kidneyseg.provenance.run_record`): ``{route: folder}`` for a pipeline that picks a
    shipped model per scan (``PipelineSpec.routes``, without ``model``), else one folder or
    ``None``."""
    spec = PIPELINES[name]
    if spec.routes and model is None:
        return {r: PIPELINES[r].model_folder(None) for r in spec.routes}
    return spec.model_folder(model)


def get_pipeline(name: str, model: str | None = None, device: str = "auto", preset: str | None = None):
    """Instantiate a registered pipeline (with ``preset``: one of its spec's ``presets``).

    Raises:
        InputError: unknown pipeline name or preset.
    """
    from ..errors import InputError

    if name not in PIPELINES:
        raise InputError(f"--pipeline: unknown pipeline {name!r} (available: {', '.join(PIPELINES)})")
    return PIPELINES[name].load(model=model, device=device, preset=preset)


__all__ = ["PIPELINES", "DEFAULT_PIPELINE", "PipelineInfo", "PipelineSpec", "Result", "check_segment_options", "configure_pipeline",
           "default_pipeline", "get_pipeline", "model_folders"]
