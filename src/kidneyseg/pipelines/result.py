"""The result of segmenting one case."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..io import Image


CLINICAL_FLAGS = ("kidney_count", "empty", "low_confidence", "volume_outside_validated_range", "laterality_conflict")
"""QC flags placed beside the volumes in ``volumes.csv`` (the others follow the voxel counts)."""


@dataclass
class Result:
    """One segmented case.

    Attributes:
        case: case name (input file name without extension).
        mask: label :class:`~kidneyseg.io.Image` on exactly the input's grid (shape, affine).
        label_map: label value -> name.
        volumes_ml: ``{"kidney_right_ml": ..., "kidney_left_ml": ..., "total_ml": ...}``.
        qc: quality-control flags (``kidney_count``, ``touches_border``, ``empty``, ...).
        voxel_counts: label name -> voxel count.
        seconds: wall time of the segmentation (load to mask), s.
        network_labels: the network's argmax on the input grid before post-processing
            (for diagnostics and benchmarks; ``None`` when not kept).
        measures: kidney lengths (mm) and the right/left volume split (%)
            (:func:`kidneyseg.volumetry.kidney_measures`); empty for label maps without sides.
        probability: float32 kidney probability (the network's summed kidney classes, after
            its test-time augmentation) on the input's grid, shape ``mask.shape``; ``None``
            for pipelines that do not produce one (``PipelineSpec.probabilities``).
    """

    case: str
    mask: Image
    label_map: dict[int, str]
    volumes_ml: dict[str, float]
    qc: dict[str, object] = field(default_factory=dict)
    voxel_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    network_labels: np.ndarray | None = field(default=None, repr=False)
    measures: dict[str, float] = field(default_factory=dict)
    probability: np.ndarray | None = field(default=None, repr=False)

    def row(self) -> dict[str, object]:
        """Flat row for ``volumes.csv``/``volumes.json``, the clinical columns first: case,
        volumes (mL, one decimal: the models' volume error is several percent, so further
        digits carry no information), kidney lengths (mm) and split (%), the QC flags a reader
        acts on (:data:`CLINICAL_FLAGS`); then the technical ones: voxel counts, the other QC
        values, seconds."""
        row: dict[str, object] = {"case": self.case}
        row.update({k: round(v, 1) for k, v in self.volumes_ml.items()})
        row.update(self.measures)
        row.update({k: self.qc[k] for k in CLINICAL_FLAGS if k in self.qc})
        row.update({f"{k}_voxels": v for k, v in self.voxel_counts.items()})
        row.update({k: v for k, v in self.qc.items() if k not in CLINICAL_FLAGS})
        row["seconds"] = round(self.seconds, 2)
        return row


def side_volumes_ml(canonical: Image, sides: np.ndarray) -> dict[str, float]:
    """``kidney_right_ml`` and ``kidney_left_ml`` of a per-side label array (1 right, 2 left) on
    ``canonical``'s grid, through :func:`kidneyseg.volumetry.label_volumes_ml` (the affine's
    determinant, like every other volume), for the CT pipelines whose labels are kidney and
    masses rather than sides."""
    from ..volumetry import label_volumes_ml

    return label_volumes_ml(canonical.with_array(np.asarray(sides, dtype=np.uint8)),
                            {1: "kidney_right", 2: "kidney_left"})


def volumetric_result(image: Image, mask_arr: np.ndarray, label_map: dict[int, str], qc: dict[str, object],
                      started: float, network_labels: np.ndarray | None = None) -> Result:
    """The :class:`Result` of a 3D pipeline from its label array on the input's grid.

    Adds volumes (mL per label and ``total_ml``), voxel counts and the QC flag
    ``touches_border`` to ``qc``; ``seconds`` counts from ``started`` (``time.perf_counter()``).

    Raises:
        GeometryError: the mask's grid differs from the input's (a bug in the caller).
    """
    import time

    from ..errors import GeometryError
    from ..volumetry import kidney_measures, label_volumes_ml, touches_border

    mask = image.with_array(mask_arr)
    if mask.shape != image.shape or not np.array_equal(mask.affine, image.affine):
        raise GeometryError("mask grid differs from input grid")
    volumes = label_volumes_ml(mask, label_map)
    volumes["total_ml"] = sum(volumes.values())
    counts = np.bincount(np.asarray(mask_arr).ravel(), minlength=max(label_map) + 1)
    qc = {**qc, "touches_border": touches_border(mask_arr)}
    return Result(case=image.name, mask=mask, label_map=dict(label_map), volumes_ml=volumes, qc=qc,
                  voxel_counts={n: int(counts[v]) for v, n in label_map.items()},
                  seconds=time.perf_counter() - started, network_labels=network_labels,
                  measures=kidney_measures(mask, label_map))
