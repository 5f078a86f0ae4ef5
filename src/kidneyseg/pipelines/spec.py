"""What a registered pipeline declares: :class:`PipelineSpec` (the registry itself is
:data:`kidneyseg.pipelines.PIPELINES`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class PipelineSpec:
    """A registered pipeline's declared capabilities: its name, modality, what it does, the
    class that implements it, and which ``segment`` options it honours (any other is refused
    by :func:`check_segment_options`). ``tests/pipelines/test_pipeline_contract.py`` checks every class
    against its spec (:mod:`kidneyseg.pipelines.base`).

    Attributes:
        implementation: ``"module:Class"`` of the pipeline class (imported only when used).
        labels: label value -> structure name of its masks (from :mod:`kidneyseg.labels`).
        spatial_dims: 3 for volumes, 2 for ultrasound frames.
        trainable: ``kidneyseg train --pipeline NAME`` makes a model folder for it.
        tta: has test-time augmentation that ``--no-tta`` turns off.
        keep_largest: its post-processing keeps the largest components, which
            ``--keep-all-components`` turns off.
        secondary: takes a second image (``--secondary``).
        allow_ct: refuses CT-looking input unless ``--allow-ct``.
        volumetric: 3D files in, NIfTI/DICOM SEG out, so ``--report``, ``--resume``,
            ``--manifest``, ``--engine ray``, ``--series`` and ``--output-type`` apply (2D
            ultrasound frames: PNG masks, none of these).
        shipped_model: folder name under ``assets/models`` of the model used without
            ``--model`` (``None``: nothing shipped).
        probabilities: its results carry the kidney probability map
            (``Result.probability``), which ``--save-probabilities`` writes.
        factory: ``factory(model=..., device=...)`` when loading needs more than
            ``Class.load(model_folder, device)``.
        presets: ``segment --preset NAME`` -> ``"module:function"`` returning the config the
            class's ``load`` takes as ``config`` (e.g. ``paper``: the values of the method's
            paper).
        routes: the pipelines whose shipped models this one chooses between per scan
            (``mr-auto``); the run's provenance records each of their model folders.
    """

    name: str
    modality: str
    description: str
    implementation: str
    labels: dict[int, str]
    spatial_dims: int = 3
    trainable: bool = True
    tta: bool = False
    keep_largest: bool = True
    secondary: bool = False
    allow_ct: bool = False
    volumetric: bool = True
    shipped_model: str | None = None
    probabilities: bool = False
    factory: Callable[..., object] | None = None
    presets: dict[str, str] = field(default_factory=dict)
    routes: tuple[str, ...] = ()

    def pipeline_class(self) -> type:
        """The implementing class (imports its module)."""
        import pkgutil

        return pkgutil.resolve_name(self.implementation)

    def check_preset(self, preset: str | None) -> None:
        """Raise :class:`~kidneyseg.errors.InputError` (one line) for a preset this pipeline
        does not have; ``None`` passes."""
        if preset is not None and preset not in self.presets:
            from ..errors import InputError

            raise InputError(f"--preset {preset}: pipeline {self.name} has no such preset "
                             f"(presets: {', '.join(self.presets) or 'none'})")

    def load(self, model: str | None = None, device: str = "auto", preset: str | None = None):
        """A loaded pipeline (:class:`kidneyseg.pipelines.base.Pipeline`).

        Args:
            preset: a name of :attr:`presets`; its function's config is given to the
                class's ``load(..., config=...)``.

        Raises:
            InputError: no usable model folder; a preset this pipeline does not have.
        """
        if preset is not None:
            import pkgutil

            self.check_preset(preset)
            config = pkgutil.resolve_name(self.presets[preset])()
            return self.pipeline_class().load(self.model_folder(model), device, config=config)
        if self.factory is not None:
            return self.factory(model=model, device=device)
        folder = self.model_folder(model)
        return self.pipeline_class().load(None if folder is None else str(folder), device)

    def model_folder(self, model: str | None = None):
        """The model folder a run uses: ``model``, else the shipped one, else ``None``."""
        if model is not None:
            return model
        if self.shipped_model is None:
            return None
        from ..models.store import default_model_dir

        return default_model_dir(self.shipped_model)


__all__ = ["PipelineSpec"]
