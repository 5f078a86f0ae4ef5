"""DICOM SEG output: a label mask stored as a DICOM Segmentation object that references the
source series (highdicom), and its reading back.

Segments are the labels present in the mask, numbered 1.. in label order, each with a coded
concept (SNOMED CT, as used by TotalSegmentator and the DICOM standard's CID 7140/7151):

=================  =====================================  ==========================
kidneyseg name      segmented property type                category
=================  =====================================  ==========================
``kidney_right``   Right kidney (SCT 9846003)              Anatomical structure
``kidney_left``    Left kidney (SCT 18639004)              Anatomical structure
``kidney``         Kidney (SCT 64033007)                   Anatomical structure
``tumor``          Neoplasm (SCT 108369006), in kidney     Morphologically abnormal structure
``cyst``           Cyst (SCT 441457006), in kidney         Morphologically abnormal structure
=================  =====================================  ==========================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..labels import display_rgb
from .image import Image

_ANATOMY = ("91723000", "SCT", "Anatomical Structure")
_ABNORMAL = ("49755003", "SCT", "Morphologically Abnormal Structure")
SEGMENT_CODES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "kidney_right": (_ANATOMY, ("9846003", "SCT", "Right kidney")),
    "kidney_left": (_ANATOMY, ("18639004", "SCT", "Left kidney")),
    "kidney": (_ANATOMY, ("64033007", "SCT", "Kidney")),
    "tumor": (_ABNORMAL, ("108369006", "SCT", "Neoplasm")),
    "cyst": (_ABNORMAL, ("441457006", "SCT", "Cyst")),
}
"""kidneyseg structure name -> (category, type), each ``(code value, scheme, meaning)``."""


def source_files(folder: str | Path, series_uid: str | None = None, volume: int | None = None) -> list[Path]:
    """The files of a DICOM series in the order SimpleITK/GDCM reads them (the slice order of
    :func:`~kidneyseg.io.read_image` on the folder, i.e. the array's last axis); of a series
    holding several images per slice position, those of the image set read
    (``volume``, :func:`~kidneyseg.io.readers.dicom_image_set`).

    Raises:
        InputError: no series, or several and no ``series_uid``; ``volume`` as in
            :func:`~kidneyseg.io.readers.dicom_image_set`.
    """
    import SimpleITK as sitk

    from .readers import dicom_image_set

    folder = Path(folder)
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))) if folder.is_dir() else []
    if not uids:
        raise InputError(f"{folder}: DICOM SEG output needs a DICOM series folder as input; none found")
    if series_uid is None:
        if len(uids) > 1:
            raise InputError(f"{folder}: holds {len(uids)} DICOM series; choose one by SeriesInstanceUID")
        series_uid = uids[0]
    return [Path(f) for f in dicom_image_set(folder, series_uid, volume)[1].files]


def check_source_datasets(datasets, files, where) -> None:
    """Refuse, before any segmentation, a series a DICOM SEG cannot reference: every slice
    needs one shared FrameOfReferenceUID (the SEG's frame of reference must be its source's,
    or viewers cannot overlay it), a StudyInstanceUID and a SOPInstanceUID. ``datasets``: the
    headers, already read; ``files``: their paths and ``where``: the input, for the message.
    An enhanced multi-frame source is refused too: kidneyseg reads its frames by position
    (:func:`kidneyseg.io.image_sets.read_frames`), but writes SEG and RTSTRUCT only for classic
    one-file-per-slice series."""
    frames = set()
    for ds, f in zip(datasets, files):
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{where}: {Path(f).name} is a multi-frame DICOM object; DICOM SEG and RTSTRUCT output "
                             "are written for one-file-per-slice series only; use --output-type nifti")
        for attr in ("FrameOfReferenceUID", "StudyInstanceUID", "SOPInstanceUID"):
            if not str(getattr(ds, attr, "") or "").strip():
                raise InputError(f"{where}: slice {Path(f).name} has no {attr}, which a DICOM SEG needs of its source "
                                 "images; use --output-type nifti")
        frames.add(str(ds.FrameOfReferenceUID))
    if len(frames) > 1:
        raise InputError(f"{where}: the series' slices have {len(frames)} different FrameOfReferenceUIDs; a DICOM SEG "
                         "needs one; use --output-type nifti")


def write_dicom_seg(mask: Image, label_map: dict[int, str], source_folder: str | Path, path: str | Path,
                    series_uid: str | None = None, algorithm_name: str = "kidneyseg", algorithm_version: str = "0",
                    volume: int | None = None) -> Path:
    """Write ``mask`` as a DICOM SEG file referencing the series in ``source_folder``.

    Args:
        mask: labels on the grid of :func:`~kidneyseg.io.read_image` of ``source_folder``
            (``(X, Y, Z)`` = (columns, rows, slices in GDCM order)), integer values.
        label_map: label value -> kidneyseg name; each name must be in :data:`SEGMENT_CODES`.
        source_folder: the DICOM series the mask was computed from.
        path: output file (``.dcm``).
        volume: the image set of a series with several images per slice position (the SEG
            references that set's images only; :func:`source_files`).

    Returns:
        ``path``. Only labels present in the mask get a segment, numbered 1.. in label
        order, each named by its kidneyseg label (``SegmentLabel``); an empty mask gets
        every label of ``label_map`` as an empty segment (all frames stored).

    Raises:
        InputError: the source is not one DICOM series, its slices do not match the mask's
            shape, or a label has no coded concept.

    Library: highdicom ``Segmentation`` (BINARY, label-map input), pydicom.
    """
    import highdicom as hd
    import pydicom

    files = source_files(source_folder, series_uid, volume)
    sources = [pydicom.dcmread(f) for f in files]
    check_source_datasets(sources, files, source_folder)  # read once: the runner checked the headers before the model
    arr = np.asarray(mask.array)
    if arr.ndim != 3 or arr.shape[2] != len(sources) or (int(sources[0].Columns), int(sources[0].Rows)) != arr.shape[:2]:
        raise InputError(f"{source_folder}: {len(sources)} slices of {sources[0].Columns} x {sources[0].Rows} do not match "
                         f"the mask's shape {arr.shape}")
    present = [int(v) for v in np.unique(arr) if v != 0]
    empty = not present
    if empty:  # an empty result is still a result: every segment of the label map, no pixel set
        present = sorted(int(v) for v in label_map)
    descriptions = []
    relabel = np.zeros(max(int(arr.max()), *present) + 1, dtype=np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name, version=algorithm_version,
                                                   family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"))
    for number, value in enumerate(present, start=1):
        name = label_map.get(value)
        if name not in SEGMENT_CODES:
            raise InputError(f"{path}: label {value} ({name!r}) has no coded concept for DICOM SEG")
        cat, typ = SEGMENT_CODES[name]
        kwargs = {}
        if name in ("tumor", "cyst"):
            kwargs["anatomic_regions"] = [hd.sr.CodedConcept("64033007", "SCT", "Kidney")]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=hd.sr.CodedConcept(*cat),
            segmented_property_type=hd.sr.CodedConcept(*typ), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(*display_rgb(name)),
            **kwargs))
        relabel[value] = number
    frames = relabel[arr].transpose(2, 1, 0)  # (X, Y, Z) -> (slices, rows, columns)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="kidneyseg", manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version, device_serial_number="0", series_description="kidneyseg segmentation",
        omit_empty_frames=not empty)
    seg.save_as(str(path))
    return Path(path)


def read_dicom_seg(path: str | Path, source_folder: str | Path, series_uid: str | None = None,
                   volume: int | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """Read a DICOM SEG back onto the source series' grid.

    Returns:
        ``(segments, names)``: ``uint8`` ``(X, Y, Z)`` segment numbers on the grid of
        :func:`~kidneyseg.io.read_image` of ``source_folder`` (0 background), and segment
        number -> segment label.

    Raises:
        InputError: unreadable file, or a SEG that references other images.
    """
    import highdicom as hd
    import pydicom

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM SEG ({exc.__class__.__name__}: {exc})") from None
    files = source_files(source_folder, series_uid, volume)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    try:
        stack = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                                  relabel=False, ignore_spatial_locations=True)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: does not reference the series in {source_folder} ({exc})") from None
    names = {int(n): str(seg.get_segment_description(int(n)).segment_label) for n in seg.get_segment_numbers()}
    return np.asarray(stack, dtype=np.uint8).transpose(2, 1, 0), names


__all__ = ["SEGMENT_CODES", "read_dicom_seg", "source_files", "write_dicom_seg"]
