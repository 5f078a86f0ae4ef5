"""Is an image CT rather than MR? (A CT scan given to an MR pipeline must be refused, not
segmented into 0 mL.)"""

from __future__ import annotations

import numpy as np

from ..io import Image

HU_AIR_MAX = -500.0
"""Voxels at or below this value count as air in Hounsfield units (air is about -1000 HU)."""
HU_AIR_FRACTION = 0.05
"""Share of such voxels above which an image is taken for CT (an abdominal CT has 20-70 % air
around the body; MR magnitude images are not negative)."""


def ct_evidence(image: Image) -> str | None:
    """Why ``image`` looks like CT, or ``None``.

    CT when the DICOM Modality (0008,0060) is ``CT``, or when at least
    :data:`HU_AIR_FRACTION` of the voxels are at or below :data:`HU_AIR_MAX` and the 1st
    percentile is at or below -900 (air in Hounsfield units).

    Args:
        image: any image (3D or 2D); not modified.

    Returns:
        A short reason for an error message, or ``None`` when nothing suggests CT.
    """
    if str(image.modality).strip().upper() == "CT":
        return "DICOM Modality is CT"
    a = np.asarray(image.array)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a) or a.size == 0:
        return None
    step = max(1, int(round((a.size / 2_000_000) ** (1 / 3))))  # a subsample is enough for a share
    sub = a[::step, ::step, ::step] if a.ndim == 3 else a
    if float(sub.min()) > HU_AIR_MAX:
        return None
    share = float(np.mean(sub <= HU_AIR_MAX))
    if share >= HU_AIR_FRACTION and float(np.percentile(sub, 1)) <= -900.0:
        return f"intensities look like Hounsfield units ({100 * share:.0f} % of voxels at or below {HU_AIR_MAX:.0f})"
    return None
