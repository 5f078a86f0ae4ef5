"""Post-processing: connected components and left/right assignment in world coordinates."""

from .kidneys import KidneyAssignment, assign_kidneys, body_component, body_midline_x_mm

__all__ = ["KidneyAssignment", "assign_kidneys", "body_component", "body_midline_x_mm"]
