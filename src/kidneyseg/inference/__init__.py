"""Inference: preparation shared with training, slice-wise prediction, test-time augmentation."""

from .predict import (NO_TTA, Prepared, TestTimeAugmentation, decide_labels, predict_labels, predict_probabilities,
                      prepare, slice_stack)
from .settings import InferenceConfig, read_inference_config, write_inference_config

__all__ = ["NO_TTA", "InferenceConfig", "Prepared", "TestTimeAugmentation", "decide_labels", "predict_labels",
           "predict_probabilities", "prepare", "read_inference_config", "slice_stack", "write_inference_config"]
