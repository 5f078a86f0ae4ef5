"""Domain checks of a segmentation: is the result inside what the model was validated on?

Two QC flags travel with every ``mr-t2-unet`` result (``volumes.csv`` / ``volumes.json``, the
report): ``volume_outside_validated_range`` and ``low_confidence`` (the model folder's
``inference.json`` holds their settings, chosen by cross-validation; see its model card).
"""

from __future__ import annotations

import itertools

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


def member_dice(member_masks: list[np.ndarray], affine: np.ndarray, midline_x_mm: float) -> dict[str, float]:
    """Agreement of an ensemble's networks on each kidney: the Dice between their kidney masks
    on each side of the body midline.

    Where the networks of an ensemble, trained alike from different seeds, disagree, the recipe
    does not know the answer. This is the structure-wise Dice agreement of Monte Carlo samples
    that Roy et al. use for segmentation QC (Bayesian QuickNAT, NeuroImage 195, 2019), with
    ensemble members in place of dropout samples.

    Args:
        member_masks: two or more bool ``(X, Y, Z)`` kidney masks on one grid, one per network
            (each network's own decision, :func:`kidneyseg.inference.predict_labels` with
            ``with_members``).
        affine: 4 x 4 voxel-to-world affine of that grid (mm).
        midline_x_mm: world x of the patient's midline
            (:func:`kidneyseg.postprocess.body_midline_x_mm`); voxels with world x above it are the
            right side, as :func:`kidneyseg.postprocess.assign_kidneys` names them.

    Returns:
        ``{"kidney_right": dice, "kidney_left": dice}``: the mean Dice over pairs of members
        (one pair for two), 1.0 on a side where every pair is empty on both.

    Raises:
        ValueError: fewer than two masks, or masks of different shapes.
    """
    from ..metrics.overlap import dice  # here: the metrics package is not needed at import time

    masks = [np.asarray(m, dtype=bool) for m in member_masks]
    if len(masks) < 2 or any(m.shape != masks[0].shape for m in masks) or masks[0].ndim != 3:
        raise ValueError(f"member_dice: expected two or more 3D masks of one shape, got {[m.shape for m in masks]}")
    i, j, k = np.ogrid[tuple(slice(0, n) for n in masks[0].shape)]
    world_x = affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]
    right = np.broadcast_to(world_x > midline_x_mm, masks[0].shape)
    pairs = list(itertools.combinations(range(len(masks)), 2))
    return {name: float(np.mean([dice(masks[a] & side, masks[b] & side) for a, b in pairs]))
            for name, side in (("kidney_right", right), ("kidney_left", ~right))}
