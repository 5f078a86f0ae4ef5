"""The contract every registered pipeline class fulfils (checked for each one by
``tests/pipelines/test_pipeline_contract.py``), so a runner, a batch, the Ray workers and the Python
API can drive any of them the same way.

Stages shared by the volumetric pipelines (each module composes them; none re-implements
them): read and check the image (:mod:`kidneyseg.io`), reorient to the canonical RAS grid
(:func:`kidneyseg.io.to_canonical`), normalise and resample (:mod:`kidneyseg.preprocess`),
predict (:mod:`kidneyseg.inference`: one sliding-window entry, TTA), post-process
(:mod:`kidneyseg.postprocess`: components, left/right), back to the input grid and volumes in
mL from the affine (:func:`kidneyseg.pipelines.result.volumetric_result`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..io import Image
    from .result import Result


@runtime_checkable
class Pipeline(Protocol):
    """A loaded pipeline: one call segments one image.

    Attributes:
        name: the registered name (``kidneyseg.pipelines.PIPELINES``).
        keep_largest: keep only the largest components per structure (``--keep-all-components``
            sets it to False; pipelines whose spec says ``keep_largest=False`` ignore it).
        label_map: label value -> structure name of the masks it returns (``kidneyseg.labels``).
    """

    name: str
    keep_largest: bool

    @property
    def label_map(self) -> dict[int, str]: ...

    @classmethod
    def load(cls, model: Any = None, device: str = "auto") -> "Pipeline":
        """Load a model folder (``None``: the shipped model, or an error naming ``--model``)."""

    def segment(self, image: "Image", *args: Any, **kwargs: Any) -> "Result":
        """Segment one image (3D :class:`~kidneyseg.io.Image`; 2D frames for ultrasound) on its own grid."""


@runtime_checkable
class TTAPipeline(Pipeline, Protocol):
    """A pipeline with test-time augmentation that ``--no-tta`` turns off."""

    def disable_tta(self) -> None: ...


@runtime_checkable
class CTCheckingPipeline(Pipeline, Protocol):
    """An MR pipeline that refuses CT-looking input unless ``allow_ct`` is set (``--allow-ct``)."""

    allow_ct: bool


__all__ = ["CTCheckingPipeline", "Pipeline", "TTAPipeline"]
