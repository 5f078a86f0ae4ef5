"""Pipeline ``mr-auto``: MR kidneys with the shipped model chosen per scan.

The multiprotocol model (``mr-multiprotocol-unet``, synthesised contrasts in three planes)
segments every scan but an axial slab: coronal, sagittal and near-isotropic acquisitions, and
axial scans covering at least 150 mm along S-I (there it averages all three planes and beats the
T2 model on axial T2 in cross-validation). An axial slab goes to the T2 model (``mr-t2-unet``,
trained and validated on axial T2-SPIR) first, and to the multiprotocol model if the T2 result is
``low_confidence`` (the share of uncertain kidney voxels above its model's threshold, as on
gradient-echo contrast) or holds no kidney at all (a confident "no kidney" has no uncertain
voxels, so only this catches it). Each result says which model it got and why
(``qc["model"]``, ``qc["route"]``). The rules and their measurements: benchmarks/README.md, "A
default that sends each scan to the model made for it" and "`mr-auto`: axial whole-abdomen scans
to the multiprotocol pair".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..io import Image, check_volume
from .mr_t2 import MRKidneyPipeline
from .mr_routes import acquisition_route
from .result import Result


_SHARED_OPTIONS = ("keep_largest", "allow_ct")
"""Options of every pipeline (:func:`kidneyseg.pipelines.configure_pipeline`) that mr-auto
passes on to both of its models."""


def _option_of_both(name: str) -> property:
    """A property read from the T2 pipeline and set on both (the multiprotocol one once loaded;
    :attr:`MRAutoPipeline.multiprotocol` copies it on loading)."""
    def get(self) -> bool:
        return getattr(self.t2, name)

    def set_(self, value: bool) -> None:
        for pipe in (self.t2, self._multiprotocol):
            if pipe is not None:
                setattr(pipe, name, value)

    return property(get, set_, doc=f"``{name}`` of both models.")


class MRAutoPipeline:
    """The T2 model for axial slabs it is confident on, the multiprotocol model for the rest.

    Build with :meth:`load`; call :meth:`segment` per image. The multiprotocol model is loaded
    on first use, so a run of axial T2 scans never loads it.

    Args:
        t2: the loaded ``mr-t2-unet`` pipeline.
        multiprotocol: a callable returning the loaded ``mr-multiprotocol-unet`` pipeline
            (called once, on the first scan that needs it).
    """

    name = "mr-auto"

    def __init__(self, t2: MRKidneyPipeline, multiprotocol: Callable[[], MRKidneyPipeline]):
        self.t2 = t2
        self._load_multiprotocol = multiprotocol
        self._multiprotocol: MRKidneyPipeline | None = None
        self._tta = True

    @classmethod
    def load(cls, model: str | None = None, device: str = "auto") -> "MRAutoPipeline":
        """Both shipped models (the multiprotocol one when first needed).

        Raises:
            InputError: ``model`` given: the route is between the shipped models; a local model
                folder goes with ``--pipeline mr-t2-unet`` or ``mr-multiprotocol-unet``.
        """
        if model is not None:
            raise InputError(f"--model {model}: pipeline mr-auto chooses between the shipped models; give a model "
                             "folder with --pipeline mr-t2-unet or --pipeline mr-multiprotocol-unet")
        return cls(MRKidneyPipeline.load(None, device, "mr-t2-unet"),
                   lambda: MRKidneyPipeline.load(_multiprotocol_folder(), device, "mr-multiprotocol-unet"))

    @property
    def multiprotocol(self) -> MRKidneyPipeline:
        """The multiprotocol pipeline, loaded now if it was not, with this pipeline's options."""
        if self._multiprotocol is None:
            pipe = self._load_multiprotocol()
            for name in _SHARED_OPTIONS:
                setattr(pipe, name, getattr(self.t2, name))
            if not self._tta:
                pipe.disable_tta()
            self._multiprotocol = pipe
        return self._multiprotocol

    # the options every pipeline takes (configure_pipeline) apply to both models
    keep_largest = _option_of_both("keep_largest")
    allow_ct = _option_of_both("allow_ct")

    def disable_tta(self) -> None:
        """One plain network pass for both models."""
        self._tta = False
        self.t2.disable_tta()
        if self._multiprotocol is not None:
            self._multiprotocol.disable_tta()

    @property
    def label_map(self) -> dict[int, str]:
        return self.t2.label_map

    def segment(self, image: Image) -> Result:
        """Segment one 3D image with the model its acquisition and contrast call for.

        Args:
            image: 3D :class:`~kidneyseg.io.Image`, any orientation.

        Returns:
            The chosen model's :class:`~kidneyseg.pipelines.Result` (mask on the input's grid),
            with ``qc["model"]`` (the model folder's name) and ``qc["route"]`` (why); after a
            ``low_confidence`` or empty T2 result, ``qc["t2_uncertain_fraction"]`` keeps the T2
            model's value.

        Raises:
            InputError: as :meth:`MRKidneyPipeline.segment` (not 3D, NaN voxels, CT-looking input
                without ``allow_ct``, ...).
        """
        t0 = time.perf_counter()
        image = check_volume(image)
        route = acquisition_route(image)
        t2_fraction = None
        if route is None:
            result = self.t2.segment(image)
            t2_fraction = result.qc.get("uncertain_fraction")
            if result.qc.get("empty"):  # a confident "no kidney" has no uncertain voxels at all
                route = "T2 model found no kidney"
            elif result.qc.get("low_confidence"):
                route = f"T2 model low_confidence (uncertain_fraction {t2_fraction})"
            else:
                return _routed(result, self.t2, "axial acquisition, T2 model confident", t0)
        result = _routed(self.multiprotocol.segment(image), self.multiprotocol, route, t0)
        if t2_fraction is not None:
            result.qc["t2_uncertain_fraction"] = t2_fraction
        return result


def _multiprotocol_folder() -> str:
    from ..models.store import default_model_dir

    return str(default_model_dir("mr_multiprotocol_kidney"))


def _routed(result: Result, pipe: MRKidneyPipeline, route: str, t0: float) -> Result:
    result.qc["model"] = Path(pipe.bundle.folder).name
    result.qc["route"] = route
    result.seconds = time.perf_counter() - t0
    return result


__all__ = ["MRAutoPipeline", "acquisition_route"]
