"""Preprocessing steps: intensity normalisation, in-plane resampling, N4 bias-field correction."""

from .bias import n4_bias_correct
from .normalise import zscore_percentile
from .resample import resample_isotropic, resize_slice_axis, resize_slices

__all__ = ["n4_bias_correct", "zscore_percentile", "resample_isotropic", "resize_slice_axis", "resize_slices"]
