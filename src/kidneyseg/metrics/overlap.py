"""Overlap metrics over boolean masks."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient 2|P & R| / (|P| + |R|).

    Args:
        pred: boolean (or 0/1) mask, any shape.
        ref: boolean mask of the same shape.

    Returns:
        Dice in [0, 1]. Both empty -> 1.0 (perfect agreement on absence); exactly one
        empty -> 0.0.

    Raises:
        ValueError: the shapes differ.
    """
    p, r = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise ValueError(f"dice: shapes differ, pred {p.shape} vs ref {r.shape}")
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total
