"""Series that hold several images at each slice position: one volume per image set.

A multi-echo gradient-echo series (a B0 field map's magnitude, a T2* / BOLD series, in- and
opposed-phase T1), a magnitude + phase series, an inversion-time or b-value series: each is one
DICOM series (one SeriesInstanceUID) with several images at every slice position. A reader that
stacks all of them by position makes no volume at all. Here the images are grouped by the
attributes that tell them apart at a position (:data:`IMAGE_SET_TAGS`), each group must hold
exactly one image at each of the series' positions, and the groups are ordered so that image set
1 is the magnitude image of the shortest echo, the contrast of the ukat gradient-echo scans
(``*_e1``, the first echo) the MR models were validated on.

Enhanced (multi-frame) MR objects, one file holding every slice (and every echo) as frames with
per-frame functional groups, are split the same way by their frames' positions and functional
group attributes (:func:`frame_sets`) and read frame by frame (:func:`read_frames`): GDCM would
stack all frames of such a file into one volume whatever their positions.

Library: pydicom (headers; the pixel data of multi-frame objects).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

IMAGE_SET_TAGS: tuple[tuple[str, object], ...] = (
    ("ImageType", "ImageType"),
    ("EchoTime", "EchoTime"),
    ("EchoNumbers", "EchoNumbers"),
    ("GE image kind", (0x0043, 0x102F)),  # GE private: 0 magnitude, 1 phase, 2 real, 3 imaginary
    ("InversionTime", "InversionTime"),
    ("DiffusionBValue", "DiffusionBValue"),
    ("TriggerTime", "TriggerTime"),
    ("TemporalPositionIdentifier", "TemporalPositionIdentifier"),
    ("AcquisitionNumber", "AcquisitionNumber"),
)
"""Attributes that can tell apart the images at one slice position, in the order they are tried;
an attribute joins the key only when it separates images the earlier ones left together."""

FRAME_SET_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("ComplexImageComponent", "MRImageFrameTypeSequence", "ComplexImageComponent"),
    ("FrameType", "MRImageFrameTypeSequence", "FrameType"),
    ("EchoTime", "MREchoSequence", "EffectiveEchoTime"),
    ("InversionTime", "MRModifierSequence", "InversionTimes"),
    ("DiffusionBValue", "MRDiffusionSequence", "DiffusionBValue"),
    ("TemporalPositionIndex", "FrameContentSequence", "TemporalPositionIndex"),
    ("StackID", "FrameContentSequence", "StackID"),
)
"""The same for the frames of an enhanced (multi-frame) MR object: (name, functional group
sequence, attribute), looked up in the frame's own functional groups, then the shared ones; then
the classic attributes of :data:`IMAGE_SET_TAGS` in a legacy-converted object's unassigned
per-frame group."""

DEFAULT_SET_TAGS = frozenset({"ImageType", "EchoTime", "EchoNumbers", "GE image kind", "ComplexImageComponent",
                              "FrameType"})
"""When only these attributes differ (echoes, magnitude / phase), image set 1 (the magnitude of
the shortest echo) is used without ``volume``; any other attribute (inversion time, b-value,
time point) needs the user's choice."""

_NOT_MAGNITUDE = frozenset({"P", "PHASE", "R", "REAL", "I", "IMAGINARY"})


@dataclass(frozen=True)
class ImageSet:
    """One volume's images of a DICOM series.

    Attributes:
        files: the files, one per slice position, in the reader's slice order (ascending along
            the slice normal, as GDCM sorts them); for an enhanced multi-frame object, its one file.
        index: 1-based number of this set among ``count`` (1 and 1 for an ordinary series).
        count: how many image sets the series holds.
        attributes: the values that tell this set apart (e.g. ``{"EchoTime": "2.2"}``); empty
            for an ordinary series.
        frames: enhanced multi-frame objects only: the 0-based frame numbers of this set, one
            per slice position, in ascending position along the slice normal; ``None`` otherwise.
    """

    files: list[str]
    index: int = 1
    count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)
    frames: tuple[int, ...] | None = None

    def describe(self) -> str:
        """``"image set 1 of 2 (EchoTime 2.2)"``; ``""`` for an ordinary series."""
        if self.count == 1:
            return ""
        what = ", ".join(f"{k} {v}" for k, v in self.attributes.items())
        return f"image set {self.index} of {self.count} ({what})"


def _text(v) -> str:
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x).strip() for x in v)
    if isinstance(v, bytes):
        return v.decode("latin-1", "replace").strip("\x00 ")
    return str(v).strip()


def _value(ds, tag) -> str:
    return _text(ds[tag].value) if tag in ds else ""


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_magnitude(attrs: dict[str, str]) -> bool:
    kinds = {v.strip().upper() for key in ("ImageType", "FrameType", "ComplexImageComponent")
             for v in attrs.get(key, "").split("\\")}
    if kinds & _NOT_MAGNITUDE:
        return False
    return _number(attrs.get("GE image kind", "0") or "0") in (0.0, None)


def _order(attrs: dict[str, str]) -> tuple:
    rest = []
    for name, value in attrs.items():
        if name not in ("ImageType", "FrameType", "ComplexImageComponent"):
            n = _number(value)
            rest.append((0, n, "") if n is not None else (1, 0.0, value))
    return (not _is_magnitude(attrs), *rest, attrs.get("ImageType", ""), attrs.get("FrameType", ""))


POSITION_TOLERANCE_MM = 0.05
"""Images whose positions along the slice normal differ by less than this share a slice position
(scanners write the echoes of one slice with rounding noise in ImagePositionPatient)."""


def slice_positions(along: list[float]) -> list[float]:
    """Each position along the normal replaced by its cluster's first value: sorted positions
    closer than :data:`POSITION_TOLERANCE_MM` to the previous one join its cluster (no rounding
    boundary can split two echoes of one slice)."""
    order = sorted(range(len(along)), key=lambda i: along[i])
    out = [0.0] * len(along)
    start = prev = None
    for i in order:
        if prev is None or along[i] - prev > POSITION_TOLERANCE_MM:
            start = along[i]
        out[i] = start
        prev = along[i]
    return out


def _split(pos: list[float], values: list[dict[str, str]], names: list[str], where, what: str):
    """Group images (or frames) by the fewest attributes that make (position, key) unique.

    Returns:
        ``[(attributes, members), ...]`` in image-set order, ``members`` the indices of one set
        sorted by position.
    """
    positions = sorted(set(pos))
    key: list[str] = []
    distinct = len(positions)
    for name in names:
        n = len({(p, *(v[k] for k in key), v[name]) for p, v in zip(pos, values)})
        if n > distinct:
            key.append(name)
            distinct = n
        if distinct == len(pos):
            break
    if distinct < len(pos):
        raise InputError(f"{where}: {len(pos)} {what} at {len(positions)} slice positions and no attribute tells "
                         f"the {what} at one position apart (duplicate {what}, or several series under one "
                         "SeriesInstanceUID)")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, v in enumerate(values):
        groups[tuple(v[k] for k in key)].append(i)
    sets = []
    for k, members in groups.items():
        attrs = dict(zip(key, k))
        if sorted(pos[i] for i in members) != positions:
            desc = ", ".join(f"{a} {b}" for a, b in attrs.items())
            raise InputError(f"{where}: the {what} with {desc} cover {len(members)} of the series' {len(positions)} "
                             "slice positions; each image set must cover all of them")
        sets.append((attrs, sorted(members, key=lambda i: pos[i])))
    return sorted(sets, key=lambda s: _order(s[0]))


def image_sets(files: list[str], where: str | Path) -> list[ImageSet]:
    """Split a DICOM series' files (or the frames of one enhanced multi-frame object) into
    image sets of one image per slice position.

    Args:
        files: the files of one series (SimpleITK/GDCM order).
        where: the folder, for messages.

    Returns:
        The image sets in order: magnitude before phase, real and imaginary images, then by
        the attributes' values (shortest echo first). An ordinary series (one image per
        position, or positions unknown) is one set holding ``files`` unchanged. A single
        enhanced multi-frame file gives sets with ``frames`` (:func:`frame_sets`).

    Raises:
        InputError: images share a position and no attribute tells them apart (duplicate
            files); or an image set does not cover every slice position.
    """
    import pydicom

    if len(files) == 1:
        return frame_sets(files[0], where)
    if not files:
        return [ImageSet([])]
    tags = ["ImagePositionPatient", "ImageOrientationPatient"] + [t for _, t in IMAGE_SET_TAGS]
    heads = []
    for f in files:
        try:
            heads.append(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags))
        except Exception as exc:
            raise InputError(f"{where}: unreadable DICOM header in {Path(f).name} ({exc.__class__.__name__})") from None
    try:
        iop = np.array([float(v) for v in heads[0].ImageOrientationPatient], float)
        normal = np.cross(iop[:3], iop[3:])
        pos = slice_positions([float(np.dot(normal, [float(v) for v in h.ImagePositionPatient])) for h in heads])
    except (AttributeError, ValueError, TypeError):
        return [ImageSet(list(files))]  # no geometry: the geometry checks of the reader say so
    if len(set(pos)) == len(files):
        return [ImageSet(list(files))]
    values = [{name: _value(h, tag) for name, tag in IMAGE_SET_TAGS} for h in heads]
    sets = _split(pos, values, [n for n, _ in IMAGE_SET_TAGS], where, "images")
    return [ImageSet([files[i] for i in members], i, len(sets), attrs)
            for i, (attrs, members) in enumerate(sets, start=1)]


def _group_item(ds, i: int, sequence: str):
    """Functional group ``sequence`` of frame ``i``: its own, else the shared one; ``None``."""
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if groups is None:
            continue
        item = groups[i] if groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
        seq = item.get(sequence)
        if seq is not None and len(seq):
            return seq[0]
    return None


def frame_geometry(ds, where) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame geometry of an enhanced multi-frame object (DICOM PS3.3 C.7.6.16).

    Returns:
        ``(positions, orientation, pixel_spacing)``: ImagePositionPatient per frame ``(n, 3)``
        in mm (LPS), the one ImageOrientationPatient ``(6,)`` and PixelSpacing ``(2,)`` (row,
        column spacing in mm).

    Raises:
        InputError: a frame without a plane position, orientation or pixel spacing, or frames
            of different orientation or spacing.
    """
    n = int(ds.NumberOfFrames)
    pos, iops, spacings = [], [], []
    for i in range(n):
        plane, orient, measures = (_group_item(ds, i, s) for s in
                                   ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
        if plane is None or orient is None or measures is None or "PixelSpacing" not in measures:
            raise InputError(f"{where}: frame {i + 1} of {n} has no plane position, orientation or pixel spacing; "
                             "refusing rather than guessing the geometry")
        pos.append([float(v) for v in plane.ImagePositionPatient])
        iops.append([float(v) for v in orient.ImageOrientationPatient])
        spacings.append([float(v) for v in measures.PixelSpacing])
    iops_a, sp = np.asarray(iops), np.asarray(spacings)
    if np.abs(iops_a - iops_a[0]).max() > 1e-3:
        raise InputError(f"{where}: frames of several orientations in one object (e.g. a localiser's three planes); "
                         "export one orientation")
    if np.abs(sp - sp[0]).max() > 1e-4:
        raise InputError(f"{where}: frames of several pixel spacings in one object")
    return np.asarray(pos), iops_a[0], sp[0]


def frame_sets(path: str | Path, where: str | Path) -> list[ImageSet]:
    """Image sets of one DICOM file: a single set for a classic (single-frame) image; for an
    enhanced multi-frame MR object (``PerFrameFunctionalGroupsSequence``), the frames grouped
    by position and :data:`FRAME_SET_ATTRIBUTES` as :func:`image_sets` groups files.

    Raises:
        InputError: unreadable header, frames without geometry, duplicate frames, or a set
            that does not cover every position.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise InputError(f"{where}: unreadable DICOM header in {Path(path).name} ({exc.__class__.__name__})") from None
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if n < 2 or "PerFrameFunctionalGroupsSequence" not in ds:
        return [ImageSet([str(path)])]
    positions, iop, _ = frame_geometry(ds, where)
    normal = np.cross(iop[:3], iop[3:])
    pos = slice_positions([float(np.dot(normal, p)) for p in positions])
    values = []
    for i in range(n):
        row = {}
        for name, sequence, attr in FRAME_SET_ATTRIBUTES:
            item = _group_item(ds, i, sequence)
            row[name] = _text(item.get(attr)) if item is not None and attr in item else ""
        legacy = _group_item(ds, i, "UnassignedPerFrameConvertedAttributesSequence")  # a legacy-converted object
        for name, tag in IMAGE_SET_TAGS:
            if not row.get(name):
                row[name] = _value(legacy, tag) if legacy is not None else ""
        values.append(row)
    if len(set(pos)) == n:
        return [ImageSet([str(path)], frames=tuple(sorted(range(n), key=lambda i: pos[i])))]
    names = list(dict.fromkeys([name for name, _, _ in FRAME_SET_ATTRIBUTES] + [name for name, _ in IMAGE_SET_TAGS]))
    sets = _split(pos, values, names, where, "frames")
    return [ImageSet([str(path)], i, len(sets), attrs, tuple(members))
            for i, (attrs, members) in enumerate(sets, start=1)]


def read_frames(chosen: ImageSet, where: str | Path, dtype: type | None = None):
    """The volume of one image set of an enhanced multi-frame object.

    Args:
        chosen: a set with ``frames`` (from :func:`frame_sets`).
        dtype: numpy dtype of the array; ``None`` gives float32 when a frame is rescaled,
            else the stored type.

    Returns:
        ``(array, lps_affine, modality)``: the array ``(columns, rows, slices)`` (the order of
        the series reader), slices in ascending position along the normal, each frame's
        RescaleSlope / RescaleIntercept applied (PixelValueTransformationSequence); the
        voxel-to-LPS affine in mm, its slice column the mean step between the frames; the
        object's Modality (``""`` when absent).

    Raises:
        InputError: undecodable pixel data, or frames not evenly spaced (a missing slice).
    """
    import pydicom

    path = chosen.files[0]
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:
        raise InputError(f"{where}: cannot decode the pixel data of {Path(path).name} ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    positions, iop, spacing = frame_geometry(ds, where)
    frames = list(chosen.frames)
    scaled = []
    for i in frames:
        item = _group_item(ds, i, "PixelValueTransformationSequence")
        slope = float(item.get("RescaleSlope", 1) or 1) if item is not None else 1.0
        intercept = float(item.get("RescaleIntercept", 0) or 0) if item is not None else 0.0
        scaled.append((slope, intercept))
    plain = all(v == (1.0, 0.0) for v in scaled)
    out = np.stack([pixels[i] if plain else pixels[i].astype(np.float32) * a + b for i, (a, b) in zip(frames, scaled)])
    if dtype is not None:
        out = out.astype(dtype, copy=False)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    along = np.array([float(np.dot(normal, positions[i])) for i in frames])
    if len(frames) > 2:
        gaps = np.diff(along)
        step = float(np.median(gaps))
        worst = int(np.argmax(np.abs(gaps - step)))
        if step <= 0 or abs(gaps[worst] - step) > 0.01 * step + 1e-3:
            raise InputError(f"{where}: frames not evenly spaced: gap of {gaps[worst]:.3g} mm after slice {worst + 1} "
                             f"of {len(frames)}, others {step:.3g} mm")
    lps = np.eye(4)
    lps[:3, 0] = row * spacing[1]  # columns advance along the row direction by the column spacing
    lps[:3, 1] = col * spacing[0]
    lps[:3, 2] = ((positions[frames[-1]] - positions[frames[0]]) / (len(frames) - 1) if len(frames) > 1
                  else normal * float(_group_item(ds, 0, "PixelMeasuresSequence").get("SliceThickness", 1) or 1))
    lps[:3, 3] = positions[frames[0]]
    return np.ascontiguousarray(out.transpose(2, 1, 0)), lps, str(ds.get("Modality", "") or "")


def list_image_sets(sets: list[ImageSet]) -> str:
    """``"1: EchoTime 4.0; 2: EchoTime 6.46"``: each set's number and the values that tell it apart."""
    return "; ".join(f"{s.index}: {', '.join(f'{k} {v}' for k, v in s.attributes.items())}" for s in sets)


def choose_image_set(sets: list[ImageSet], volume: int | None, where: str | Path) -> ImageSet:
    """The image set to read.

    Args:
        sets: from :func:`image_sets`.
        volume: 1-based image set number, or ``None``: the only set, or set 1 when the sets
            differ only in :data:`DEFAULT_SET_TAGS` (echoes, magnitude / phase) and set 1 is
            the one magnitude set of the shortest echo.

    Raises:
        InputError: ``volume`` out of range; or, without ``volume``, several sets told apart by
            another attribute (inversion time, b-value, time point), or several magnitude sets
            of one echo (Dixon water, fat, in- and opposed-phase images told apart by ImageType
            only): the message lists them.
    """
    listing = list_image_sets(sets)
    if volume is not None:
        if not 1 <= volume <= len(sets):
            extra = f" ({listing})" if len(sets) > 1 else ""
            raise InputError(f"{where}: --volume {volume}: the series holds {len(sets)} image set(s){extra}")
        return sets[volume - 1]
    if len(sets) == 1:
        return sets[0]
    first = sets[0].attributes
    echo = lambda a: (a.get("EchoTime", ""), a.get("EchoNumbers", ""))  # noqa: E731
    if set(first) <= DEFAULT_SET_TAGS and _is_magnitude(first) and not any(
            _is_magnitude(t.attributes) and echo(t.attributes) == echo(first) for t in sets[1:]):
        return sets[0]
    raise InputError(f"{where}: the series holds {len(sets)} images at each slice position ({listing}); choose one "
                     "with --volume N")
