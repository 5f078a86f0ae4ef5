"""Domain checks of a segmentation: is the result inside what the model was validated on?

Two QC flags travel with every ``mr-t2-unet`` result (``volumes.csv`` / ``volumes.json``, the
report): ``volume_outside_validated_range`` and ``low_confidence`` (the model folder's
``inference.json`` holds their settings, chosen by cross-validation; see its model card).
"""

from __future__ import annotations

import numpy as np

UNCERTAIN_BAND = (0.2, 0.8)
"""Kidney probabilities in ``[low, high)`` count as uncertain."""


def uncertain_fraction(kidney_probability: np.ndarray, band: tuple[float, float] = UNCERTAIN_BAND) -> float:
    """Uncertain kidney voxels per confident kidney voxel.

    ``count(low <= p < high) / max(1, count(p >= 0.5))``: a network sure of its kidneys has a
    thin uncertain rim (about 0.1-0.3 of the kidney's voxels on scans like its training data);
    on a protocol it does not know, the uncertain cloud is as large as or larger than what it
    calls kidney. A prediction with no voxel at or above 0.5 gives the uncertain count itself.

    Args:
        kidney_probability: float ``(X, Y, Z)`` summed kidney probability (any grid).
        band: ``(low, high)`` of uncertain probabilities.

    Returns:
        A non-negative float.
    """
    p = np.asarray(kidney_probability)
    uncertain = np.count_nonzero((p >= band[0]) & (p < band[1]))
    return float(uncertain / max(1, np.count_nonzero(p >= 0.5)))


def outside_range(volumes_ml: dict[str, float], names: list[str], validated_ml: tuple[float, float]) -> bool:
    """True when a kidney's volume lies outside ``validated_ml = (low, high)`` mL, a missing
    (0 mL) kidney included.

    Args:
        volumes_ml: ``{"<name>_ml": mL}`` as in :attr:`kidneyseg.pipelines.Result.volumes_ml`.
        names: kidney label names to check, e.g. ``["kidney_right", "kidney_left"]``.
        validated_ml: the model's validated single-kidney range, mL.
    """
    lo, hi = validated_ml
    return any(not lo <= volumes_ml.get(f"{n}_ml", 0.0) <= hi for n in names)
