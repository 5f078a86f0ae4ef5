"""Optional dependencies, installed as extras of the ``kidneyseg`` distribution.

A plain ``pip install kidneyseg`` gives the MRI and CT pipelines, evaluation, planning and
training. Four groups of methods need more:

========================  ==========================  ======================================
extra                     installs                    needed by
========================  ==========================  ======================================
``kidneyseg[us]``         segmentation-models-pytorch  ``us-ensemble`` (seed 003)
                          (with timm, huggingface-hub)
``kidneyseg[dti]``        dipy                        ``kidneyseg dti``, ``em-unet3d``'s MRF step
                                                      and DWI phantoms (seed 000)
``kidneyseg[ray]``        ray                         ``segment --engine ray``
``kidneyseg[rtstruct]``   rt-utils (with OpenCV)      ``segment --output-type rtstruct``
``kidneyseg[all]``        all four
========================  ==========================  ======================================

:func:`require` imports one of them or raises a one-line :class:`MissingDependencyError`
naming the ``pip install`` to run (the command line prints it and exits with status 2).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import InputError

EXTRAS: dict[str, tuple[str, str]] = {
    "segmentation_models_pytorch": ("segmentation-models-pytorch", "us"),
    "dipy": ("dipy", "dti"),
    "ray": ("ray", "ray"),
    "rt_utils": ("rt-utils", "rtstruct"),
}
"""Import name -> (distribution, extra)."""


class MissingDependencyError(InputError):
    """An optional package a requested method needs is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import optional package ``module`` (a key of :data:`EXTRAS`) for ``purpose``.

    Args:
        module: top-level import name, e.g. ``"dipy"``.
        purpose: what needs it, for the message, e.g. ``"pipeline us-ensemble"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the package is not installed (or fails to import); the
            message names the extra, e.g. ``pip install 'kidneyseg[dti]'``.
        KeyError: ``module`` is not an optional dependency of kidneyseg (a programming error).
    """
    dist, extra = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{purpose} needs the optional package {dist}, which is not installed or does "
                                     f"not import ({exc.__class__.__name__}: {exc}); "
                                     f"install it with: pip install 'kidneyseg[{extra}]'") from None
