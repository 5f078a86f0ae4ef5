"""Region-of-interest detectors that need no trained model; boxes in voxel and world units."""

from .threshold import KidneyROI, ROIConfig, ROIResult, ball_mm, detect_kidney_rois, high_intensity_mode

__all__ = ["KidneyROI", "ROIConfig", "ROIResult", "ball_mm", "detect_kidney_rois", "high_intensity_mode"]
