"""Inference: preparation shared with training, slice-wise prediction."""

from .predict import Prepared, predict_labels, predict_probabilities, prepare, slice_stack

__all__ = ["Prepared", "predict_labels", "predict_probabilities", "prepare", "slice_stack"]
