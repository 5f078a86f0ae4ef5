"""DICOM RT Structure Set output (``segment --output-type rtstruct``) for radiotherapy
systems, written by rt-utils (``pip install 'kidneyseg[rtstruct]'``).

Library: rt-utils ``RTStructBuilder`` (contours traced per slice by OpenCV, the ROI colours
from :data:`kidneyseg.labels.DISPLAY_RGB`). rt-utils reads every image file under the
folder it is given, whatever its series; kidneyseg hands it a temporary folder of links to
the chosen series' files only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..labels import display_rgb
from .dicom_seg import check_source_datasets, source_files
from .image import Image


def write_rtstruct(mask: Image, label_map: dict[int, str], source_folder: str | Path, path: str | Path,
                   series_uid: str | None = None, description: str = "kidneyseg", volume: int | None = None) -> Path:
    """Write ``mask`` as an RT Structure Set referencing the series in ``source_folder``.

    Args:
        mask: labels on the grid of :func:`~kidneyseg.io.read_image` of ``source_folder``
            (array ``(columns, rows, slices)``, slices in GDCM's order: ascending position
            along the slice normal, the order rt-utils sorts them in too).
        label_map: label value -> structure name; one ROI per label present, named by it.
        source_folder: the DICOM series the mask was computed from.
        path: the ``.dcm`` file to write.
        series_uid: the series, when the folder holds several.
        volume: the image set of a series with several images per slice position
            (:func:`~kidneyseg.io.readers.dicom_image_set`).

    Returns:
        ``path``.

    Raises:
        InputError: rt-utils missing (names the extra), a source the structure set cannot
            reference (no FrameOfReferenceUID), or slices that do not match the mask.
    """
    from ..optional import require

    require("rt_utils", "--output-type rtstruct")
    from rt_utils import RTStructBuilder

    files = source_files(source_folder, series_uid, volume)
    arr = np.asarray(mask.array)
    if arr.ndim != 3 or arr.shape[2] != len(files):
        raise InputError(f"{source_folder}: {len(files)} slices do not match the mask's shape {arr.shape}")
    with tempfile.TemporaryDirectory(prefix="kidneyseg_rtstruct_") as tmp:
        for i, f in enumerate(files):
            os.symlink(Path(f).resolve(), Path(tmp) / f"{i:05d}.dcm")
        rt = RTStructBuilder.create_new(dicom_series_path=tmp)
        # rt-utils' own reads, checked in place (its order is its own: each link's name is the file's index)
        check_source_datasets(rt.series_data, [files[int(Path(ds.filename).stem)] for ds in rt.series_data],
                              source_folder)
        rt.set_series_description(description)
        for value, name in sorted(label_map.items()):
            roi = arr == value
            if roi.any():
                rt.add_roi(mask=np.ascontiguousarray(roi.transpose(1, 0, 2)), color=list(display_rgb(name)), name=name)
        rt.ds.save_as(str(path))  # rt-utils' own save() prints to stdout and may append ".dcm"
    return Path(path)


__all__ = ["write_rtstruct"]
