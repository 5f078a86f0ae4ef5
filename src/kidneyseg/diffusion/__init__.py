"""Diffusion MRI: tensor maps (dipy) and through-plane super-resolution (seed 000)."""

from .tensor import DWI, TENSOR_ELEMENTS, TensorMaps, fit_tensor, read_dwi, write_tensor_maps

__all__ = ["DWI", "TENSOR_ELEMENTS", "TensorMaps", "fit_tensor", "read_dwi", "write_tensor_maps"]
