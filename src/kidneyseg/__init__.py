"""kidneyseg: kidney segmentation, volumetry and evaluation for CT, MRI and ultrasound."""

__version__ = "0.1.0"

from .api import Segmenter, dti_maps, evaluate, plan_dataset, run_segment, segment, segment_files, train, train_model  # noqa: E402
from .runner import SegmentRequest  # noqa: E402

__all__ = ["SegmentRequest", "Segmenter", "__version__", "dti_maps", "evaluate", "plan_dataset", "run_segment", "segment",
           "segment_files", "train", "train_model"]
