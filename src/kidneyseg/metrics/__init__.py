"""Segmentation metrics."""

from .overlap import dice

__all__ = ["dice"]
