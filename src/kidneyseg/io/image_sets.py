"""Series that hold several images at each slice position: one volume per image set.

A multi-echo gradient-echo series (a B0 field map's magnitude, a T2* / BOLD series, in- and
opposed-phase T1), a magnitude + phase series, an inversion-time or b-value series: each is one
DICOM series (one SeriesInstanceUID) with several images at every slice position. A reader that
stacks all of them by position makes no volume at all. Here the images are grouped by the
attributes that tell them apart at a position (:data:`IMAGE_SET_TAGS`), each group must hold
exactly one image at each of the series' positions, and the groups are ordered so that image set
1 is the magnitude image of the shortest echo, the contrast of the ukat gradient-echo scans
(``*_e1``, the first echo) the MR models were validated on.

Library: pydicom (headers only, ``stop_before_pixels``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

IMAGE_SET_TAGS: tuple[tuple[str, str], ...] = (
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

DEFAULT_SET_TAGS = frozenset({"ImageType", "EchoTime", "EchoNumbers", "GE image kind"})
"""When only these attributes differ (echoes, magnitude / phase), image set 1 (the magnitude of
the shortest echo) is used without ``volume``; any other attribute (inversion time, b-value,
time point) needs the user's choice."""

_NOT_MAGNITUDE = frozenset({"P", "PHASE", "R", "REAL", "I", "IMAGINARY"})


@dataclass(frozen=True)
class ImageSet:
    """One volume's files of a DICOM series.

    Attributes:
        files: the files, one per slice position, in the reader's slice order (ascending along
            the slice normal, as GDCM sorts them).
        index: 1-based number of this set among ``count`` (1 and 1 for an ordinary series).
        count: how many image sets the series holds.
        attributes: the values that tell this set apart (e.g. ``{"EchoTime": "2.2"}``); empty
            for an ordinary series.
    """

    files: list[str]
    index: int = 1
    count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """``"image set 1 of 2 (EchoTime 2.2)"``; ``""`` for an ordinary series."""
        if self.count == 1:
            return ""
        what = ", ".join(f"{k} {v}" for k, v in self.attributes.items())
        return f"image set {self.index} of {self.count} ({what})"


def _value(ds, tag) -> str:
    if tag not in ds:
        return ""
    v = ds[tag].value
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x).strip() for x in v)
    if isinstance(v, bytes):
        return v.decode("latin-1", "replace").strip("\x00 ")
    return str(v).strip()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_magnitude(attrs: dict[str, str]) -> bool:
    kinds = {v.strip().upper() for v in attrs.get("ImageType", "").split("\\")}
    if kinds & _NOT_MAGNITUDE:
        return False
    return _number(attrs.get("GE image kind", "0") or "0") in (0.0, None)


def _order(attrs: dict[str, str]) -> tuple:
    rest = []
    for name, _ in IMAGE_SET_TAGS:
        if name in attrs and name != "ImageType":
            n = _number(attrs[name])
            rest.append((0, n, "") if n is not None else (1, 0.0, attrs[name]))
    return (not _is_magnitude(attrs), *rest, attrs.get("ImageType", ""))


def image_sets(files: list[str], where: str | Path) -> list[ImageSet]:
    """Split a DICOM series' files into image sets of one image per slice position.

    Args:
        files: the files of one series (SimpleITK/GDCM order).
        where: the folder, for messages.

    Returns:
        The image sets in order: magnitude before phase, real and imaginary images, then by
        the attributes' values in :data:`IMAGE_SET_TAGS` order (shortest echo first). An
        ordinary series (one image per position, or positions unknown) is one set holding
        ``files`` unchanged.

    Raises:
        InputError: images share a position and no attribute tells them apart (duplicate
            files); or an image set does not cover every slice position.
    """
    import pydicom

    if len(files) < 2:
        return [ImageSet(list(files))]
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
        pos = [round(float(np.dot(normal, [float(v) for v in h.ImagePositionPatient])), 2) for h in heads]
    except (AttributeError, ValueError, TypeError):
        return [ImageSet(list(files))]  # no geometry: the geometry checks of the reader say so
    positions = sorted(set(pos))
    if len(positions) == len(files):
        return [ImageSet(list(files))]
    values = [{name: _value(h, tag) for name, tag in IMAGE_SET_TAGS} for h in heads]
    key = []
    distinct = len(set(pos))
    for name, _ in IMAGE_SET_TAGS:
        n = len({(p, *(v[k] for k in key), v[name]) for p, v in zip(pos, values)})
        if n > distinct:
            key.append(name)
            distinct = n
        if distinct == len(files):
            break
    if distinct < len(files):
        raise InputError(f"{where}: {len(files)} images at {len(positions)} slice positions and no attribute tells "
                         "the images at one position apart (duplicate files, or several series under one "
                         "SeriesInstanceUID)")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, v in enumerate(values):
        groups[tuple(v[k] for k in key)].append(i)
    sets = []
    for k, members in groups.items():
        attrs = dict(zip(key, k))
        if sorted(pos[i] for i in members) != positions:
            what = ", ".join(f"{a} {b}" for a, b in attrs.items())
            raise InputError(f"{where}: the images with {what} cover {len(members)} of the series' {len(positions)} "
                             "slice positions; each image set must cover all of them")
        members.sort(key=lambda i: pos[i])
        sets.append((attrs, [files[i] for i in members]))
    sets.sort(key=lambda s: _order(s[0]))
    return [ImageSet(fs, i, len(sets), attrs) for i, (attrs, fs) in enumerate(sets, start=1)]


def list_image_sets(sets: list[ImageSet]) -> str:
    """``"1: EchoTime 4.0; 2: EchoTime 6.46"``: each set's number and the values that tell it apart."""
    return "; ".join(f"{s.index}: {', '.join(f'{k} {v}' for k, v in s.attributes.items())}" for s in sets)


def choose_image_set(sets: list[ImageSet], volume: int | None, where: str | Path) -> ImageSet:
    """The image set to read.

    Args:
        sets: from :func:`image_sets`.
        volume: 1-based image set number, or ``None``: the only set, or set 1 when the sets
            differ only in :data:`DEFAULT_SET_TAGS` (echoes, magnitude / phase).

    Raises:
        InputError: ``volume`` out of range; or several sets told apart by another attribute
            (inversion time, b-value, time point) and no ``volume`` (the message lists them).
    """
    listing = list_image_sets(sets)
    if volume is not None:
        if not 1 <= volume <= len(sets):
            extra = f" ({listing})" if len(sets) > 1 else ""
            raise InputError(f"{where}: --volume {volume}: the series holds {len(sets)} image set(s){extra}")
        return sets[volume - 1]
    if len(sets) == 1:
        return sets[0]
    if set(sets[0].attributes) <= DEFAULT_SET_TAGS:
        return sets[0]
    raise InputError(f"{where}: the series holds {len(sets)} images at each slice position ({listing}); choose one "
                     "with --volume N")
