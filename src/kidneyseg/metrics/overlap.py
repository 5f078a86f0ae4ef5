"""Voxel-overlap metrics over boolean masks: Dice, Jaccard, precision, recall,
specificity, accuracy, F1 and the volume differences of seeds 000 and 001.

Every function takes ``pred`` and ``ref`` boolean arrays of the same shape (2D or 3D, any
axis order) and returns a Python ``float``. None of them ever returns NaN: the rules for
empty masks are part of each definition and are stated in its docstring. Definitions
follow seed 003 section 3 (precision, recall, F1, accuracy, Jaccard), seed 000 Table 1
(volume difference, PPV) and seed 001 section 4 (percentage kidney volume difference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def check_masks(pred: object, ref: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of masks.

    Args:
        pred: predicted mask, ``np.ndarray`` of dtype ``bool``.
        ref: reference mask, ``np.ndarray`` of dtype ``bool``, same shape as ``pred``.

    Returns:
        ``(pred, ref)`` unchanged (no copy).

    Raises:
        TypeError: an argument is not a numpy array or not of dtype ``bool`` (label
            arrays must be turned into masks explicitly, e.g. ``labels == 2``).
        ValueError: the shapes differ or the masks are empty arrays (size 0).
    """
    for name, m in (("pred", pred), ("ref", ref)):
        if not isinstance(m, np.ndarray):
            raise TypeError(f"{name}: expected a numpy bool array, got {type(m).__name__}")
        if m.dtype != np.bool_:
            raise TypeError(f"{name}: expected dtype bool, got {m.dtype} (compare labels explicitly, e.g. mask == 1)")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref: shapes differ, pred {pred.shape} vs ref {ref.shape}")
    if pred.size == 0:
        raise ValueError(f"pred and ref: arrays have no voxels (shape {pred.shape})")
    return pred, ref


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of a binary comparison and every overlap metric derived from them.

    Attributes:
        tp, fp, fn, tn: true/false positive/negative voxel counts (``int``).
    """

    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_masks(cls, pred: np.ndarray, ref: np.ndarray, size: int | None = None) -> "Confusion":
        """Count voxels of two boolean masks.

        Args:
            pred, ref: boolean masks of the same shape (see :func:`check_masks`).
            size: total voxel count of the full image when ``pred`` and ``ref`` are a crop
                that contains every foreground voxel of both (the true negatives outside the
                crop are then added); ``None`` uses ``pred.size``.
        """
        check_masks(pred, ref)
        n_pred = int(np.count_nonzero(pred))
        n_ref = int(np.count_nonzero(ref))
        tp = int(np.count_nonzero(pred & ref)) if n_pred and n_ref else 0
        total = pred.size if size is None else int(size)
        fp, fn = n_pred - tp, n_ref - tp
        return cls(tp=tp, fp=fp, fn=fn, tn=total - tp - fp - fn)

    @property
    def n_pred(self) -> int:
        """Foreground voxels of the prediction."""
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        """Foreground voxels of the reference."""
        return self.tp + self.fn

    @property
    def dice(self) -> float:
        """2TP / (2TP + FP + FN). Both masks empty -> 1.0; exactly one empty -> 0.0."""
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2.0 * self.tp / denom

    @property
    def jaccard(self) -> float:
        """TP / (TP + FP + FN) (IoU). Both empty -> 1.0; exactly one empty -> 0.0."""
        denom = self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else self.tp / denom

    @property
    def precision(self) -> float:
        """TP / (TP + FP) (PPV). Empty prediction: 1.0 if the reference is empty too,
        else 0.0 (a missed structure is not a perfect prediction)."""
        if self.n_pred == 0:
            return 1.0 if self.n_ref == 0 else 0.0
        return self.tp / self.n_pred

    @property
    def recall(self) -> float:
        """TP / (TP + FN) (sensitivity). Empty reference: 1.0 if the prediction is empty
        too, else 0.0 (every predicted voxel is a false positive)."""
        if self.n_ref == 0:
            return 1.0 if self.n_pred == 0 else 0.0
        return self.tp / self.n_ref

    @property
    def specificity(self) -> float:
        """TN / (TN + FP). A reference covering the whole image has no negatives; then
        FP is 0 as well and the value is 1.0."""
        denom = self.tn + self.fp
        return 1.0 if denom == 0 else self.tn / denom

    @property
    def accuracy(self) -> float:
        """(TP + TN) / all voxels."""
        return (self.tp + self.tn) / (self.tp + self.fp + self.fn + self.tn)

    @property
    def f1(self) -> float:
        """2 P R / (P + R) from :attr:`precision` and :attr:`recall` (seed 003 eq. 4);
        equal to Dice whenever both masks are non-empty. P + R = 0 -> 0.0."""
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)

    @property
    def volume_difference(self) -> float:
        """|Vp - Vr| / Vr as a fraction (seed 000, Table 1 "VD"). Empty reference: 0.0 if
        the prediction is empty too, else ``inf``."""
        if self.n_ref == 0:
            return 0.0 if self.n_pred == 0 else math.inf
        return abs(self.n_pred - self.n_ref) / self.n_ref

    @property
    def pkvd(self) -> float:
        """Percentage kidney volume difference, 100 |Vp - Vr| / Vr (seed 001, section 4);
        same empty-mask rules as :attr:`volume_difference`."""
        return 100.0 * self.volume_difference


def confusion(pred: np.ndarray, ref: np.ndarray) -> Confusion:
    """:class:`Confusion` counts of two boolean masks (see :func:`check_masks` for errors)."""
    return Confusion.from_masks(pred, ref)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient (DSC) 2|P & R| / (|P| + |R|) of two boolean masks.

    Both empty -> 1.0 (agreement on absence); exactly one empty -> 0.0.

    Raises:
        TypeError: a mask is not a bool array. ValueError: shapes differ.
    """
    return confusion(pred, ref).dice


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index (IoU) |P & R| / |P | R|. Both empty -> 1.0; one empty -> 0.0."""
    return confusion(pred, ref).jaccard


def precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """Precision (PPV); see :attr:`Confusion.precision` for empty masks."""
    return confusion(pred, ref).precision


def recall(pred: np.ndarray, ref: np.ndarray) -> float:
    """Recall (sensitivity); see :attr:`Confusion.recall` for empty masks."""
    return confusion(pred, ref).recall


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Specificity TN / (TN + FP); see :attr:`Confusion.specificity`."""
    return confusion(pred, ref).specificity


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    """Voxel accuracy (TP + TN) / N."""
    return confusion(pred, ref).accuracy


def f1(pred: np.ndarray, ref: np.ndarray) -> float:
    """F1 score from precision and recall; see :attr:`Confusion.f1`."""
    return confusion(pred, ref).f1


def volume_difference(pred: np.ndarray, ref: np.ndarray) -> float:
    """|Vp - Vr| / Vr (seed 000); empty reference -> 0.0 or ``inf``. Both masks are on one
    grid, so voxel counts stand for volumes and no spacing is needed."""
    return confusion(pred, ref).volume_difference


def pkvd(pred: np.ndarray, ref: np.ndarray) -> float:
    """Percentage kidney volume difference 100 |Vp - Vr| / Vr (seed 001)."""
    return confusion(pred, ref).pkvd
