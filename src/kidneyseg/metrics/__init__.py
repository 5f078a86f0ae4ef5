"""Segmentation metrics over boolean masks and label maps, in millimetres.

Overlap (:mod:`.overlap`): Dice, Jaccard, precision, recall, specificity, accuracy, F1,
volume difference (seed 000) and PKVD (seed 001). Surface (:mod:`.surface`): Hausdorff,
HD95, average (symmetric) surface distance and surface Dice by DeepMind's surfel method.
Label maps and regions (:mod:`.evaluate`): per-label rows, KiTS hierarchical regions,
summaries. File and folder evaluation with outputs: :mod:`.files`.
"""

from .evaluate import (
    KITS_REGIONS,
    METRICS,
    MR_KIDNEY_REGIONS,
    Region,
    evaluate_labels,
    evaluate_region,
    label_regions,
    summarise,
)
from .overlap import (
    Confusion,
    accuracy,
    confusion,
    dice,
    f1,
    jaccard,
    pkvd,
    precision,
    recall,
    specificity,
    volume_difference,
)
from .surface import (
    SurfaceDistances,
    assd_mm,
    average_surface_distances_mm,
    hausdorff95_mm,
    hausdorff_mm,
    robust_hausdorff_mm,
    surface_dice,
    surface_distances,
)

__all__ = [
    "Confusion", "KITS_REGIONS", "METRICS", "MR_KIDNEY_REGIONS", "Region", "SurfaceDistances",
    "accuracy", "assd_mm", "average_surface_distances_mm", "confusion", "dice", "evaluate_labels",
    "evaluate_region", "f1", "hausdorff95_mm", "hausdorff_mm", "jaccard", "label_regions", "pkvd",
    "precision", "recall", "robust_hausdorff_mm", "specificity", "summarise", "surface_dice",
    "surface_distances", "volume_difference",
]
