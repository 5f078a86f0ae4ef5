"""Geometry-exact I/O: :class:`Image`, readers, writers and RAS reorientation."""

from .image import Image, case_name
from .orientation import LPS_TO_RAS, PLANE_AXES, Reorientation, acquisition_axes, acquisition_plane_name, axcodes, from_canonical, to_canonical
from .readers import check_volume, read_image
from .writers import AtomicOutputs, atomic_path, mask_to_nifti, write_json, write_mask, write_text

__all__ = [
    "Image", "case_name", "LPS_TO_RAS", "PLANE_AXES", "Reorientation", "acquisition_axes", "acquisition_plane_name", "axcodes", "from_canonical", "to_canonical",
    "check_volume", "read_image", "AtomicOutputs", "atomic_path", "mask_to_nifti", "write_json",
    "write_mask", "write_text",
]
