"""Preprocessing steps: intensity normalisation and in-plane resampling."""

from .normalise import zscore_percentile
from .resample import resize_slices

__all__ = ["zscore_percentile", "resize_slices"]
