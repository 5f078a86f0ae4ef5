"""Which shipped MR model ``mr-auto`` gives a scan, from its geometry alone. Kept apart from
:mod:`kidneyseg.pipelines.mr_auto` so that ``kidneyseg info`` can say it without importing torch."""

from __future__ import annotations

from ..io import Image, acquisition_plane_name, to_canonical
from ..io.orientation import acquisition_extent_mm, covers_planes


def acquisition_route(image: Image) -> str | None:
    """Why a scan skips the T2 model, from its geometry alone: ``None`` for an axial slab
    (the thickest voxel side along S-I, a slab by
    :func:`~kidneyseg.io.orientation.covers_planes`); ``"axial acquisition
    covering N mm"`` for an axial scan covering more (the multiprotocol model then averages
    all three planes, and beats the T2 model on axial T2 in cross-validation:
    benchmarks/README.md, "`mr-auto`: axial whole-abdomen scans to the multiprotocol pair");
    else ``"coronal acquisition"``, ``"sagittal acquisition"`` or ``"near-isotropic voxels"``
    (:func:`kidneyseg.io.acquisition_plane_name` of the RAS-canonical spacing)."""
    canonical = to_canonical(image, copy=False)[0]
    plane = acquisition_plane_name(canonical.spacing_mm)
    if plane == "axial":
        return f"axial acquisition covering {acquisition_extent_mm(canonical):.0f} mm" if covers_planes(canonical) else None
    return "near-isotropic voxels" if plane == "near-isotropic" else f"{plane} acquisition"


__all__ = ["acquisition_route"]
