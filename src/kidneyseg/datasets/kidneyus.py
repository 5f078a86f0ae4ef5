"""Reader for the Open Kidney Ultrasound Data Set (Singla et al., ASMUS 2023; CC BY-NC-SA).

The published annotation release holds, for each of two sonographers ``k`` = 1, 2:

* ``reviewed_labels_k.csv``: a VGG Image Annotator (VIA) export, one row per drawn region
  (``filename, file_size, file_attributes, region_count, region_id,
  region_shape_attributes, region_attributes``). ``file_attributes`` is JSON with
  ``Quality``, ``View`` and ``Comments``; ``region_shape_attributes`` is a VIA shape
  (``polygon`` with ``all_points_x``/``all_points_y``, or ``rect`` with ``x, y, width,
  height``); ``region_attributes`` names the ``Anatomy`` (``Capsule``, ``Cortex``,
  ``Medulla``, ``Central Echo Complex``). An image with nothing drawn has one row with
  ``region_count`` 0 and empty shapes.
* ``reviewed_masks_k/capsule/<filename>``: binary capsule mask (0/1, uint8, image size).
* ``reviewed_masks_k/regions/<filename>``: region mask with values 1 central echo complex,
  2 medulla, 3 cortex (:data:`REGION_LABELS`; found by rasterising the polygons, see
  ``tests/datasets/test_kidneyus.py``).

The images themselves are released by their owners after registration, so the reader
takes any image folder (or none) and reports annotations whose image is missing.

Arrays are ``(H, W)`` (row = depth from the probe, column = lateral), in pixels; the data
set carries no pixel spacing.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from ..errors import InputError

REGION_LABELS: dict[int, str] = {1: "central_echo_complex", 2: "medulla", 3: "cortex"}
"""Values of the published ``regions/`` masks."""

ANATOMY = {"capsule": "capsule", "cortex": "cortex", "medulla": "medulla", "central echo complex": "central_echo_complex"}
"""VIA ``Anatomy`` attribute (lower case) -> kidneyseg structure name."""

SONOGRAPHERS = (1, 2)
Reference = Literal["sonographer1", "sonographer2", "intersection", "union", "staple"]
REFERENCES: tuple[str, ...] = ("sonographer1", "sonographer2", "intersection", "union", "staple")

PAPER_SPLIT = (295, 60, 159)
"""Seed 003's split of 514 images: train / validation / test."""


@dataclass(frozen=True)
class Shape:
    """One drawn region of one sonographer.

    Attributes:
        anatomy: structure name (a value of :data:`ANATOMY`).
        kind: VIA shape name, ``"polygon"`` or ``"rect"``.
        x, y: vertex columns and rows in pixels (for a rect, its four corners).
        row: 1-based line of the CSV file it came from (the header is line 1).
    """

    anatomy: str
    kind: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    row: int

    def rasterise(self, shape_hw: tuple[int, int]) -> np.ndarray:
        """Filled region as a ``bool`` array of ``shape_hw`` (vertices outside are clipped).

        Uses :func:`skimage.draw.polygon2mask` (pixel centres inside the polygon).
        """
        from skimage.draw import polygon2mask

        return polygon2mask(shape_hw, np.stack([self.y, self.x], axis=1))


@dataclass(frozen=True)
class Annotation:
    """Everything one sonographer recorded for one image.

    Attributes:
        quality: ``Quality`` attribute (``Good``, ``Fair``, ``Poor``, ``Unsatisfactory``).
        view: ``View`` attribute (``Longitudinal``, ``Transverse``, ``Other``).
        comments: free-text ``Comments`` (``"transplant"`` marks transplanted kidneys).
        shapes: drawn regions, in CSV order.
    """

    quality: str
    view: str
    comments: str
    shapes: tuple[Shape, ...]

    def mask(self, anatomy: str, shape_hw: tuple[int, int]) -> np.ndarray:
        """Union of the rasterised regions of one structure, ``bool`` ``(H, W)``."""
        out = np.zeros(shape_hw, dtype=bool)
        for s in self.shapes:
            if s.anatomy == anatomy:
                out |= s.rasterise(shape_hw)
        return out


@dataclass
class KidneyUSCase:
    """One annotated image.

    Attributes:
        name: file name (e.g. ``"1_IM-0001-0059_anon.png"``).
        patient_id: the leading number of the file name (see :func:`patient_id`).
        image_path: the image in the user's image folder, or ``None`` when it is missing.
        annotations: sonographer (1, 2) -> :class:`Annotation` (from the CSVs).
        capsule_paths, regions_paths: sonographer -> published mask PNG.
    """

    name: str
    patient_id: str
    image_path: Path | None = None
    annotations: dict[int, Annotation] = field(default_factory=dict)
    capsule_paths: dict[int, Path] = field(default_factory=dict)
    regions_paths: dict[int, Path] = field(default_factory=dict)

    @property
    def is_transplant(self) -> bool:
        """A sonographer's comment mentions a transplanted kidney."""
        return any("transplant" in a.comments.lower() for a in self.annotations.values())

    def shape_hw(self) -> tuple[int, int]:
        """Image size ``(H, W)`` in pixels, from a published mask (or the image).

        Raises:
            InputError: neither a mask nor the image is available.
        """
        from PIL import Image as PILImage

        for p in [*self.capsule_paths.values(), *self.regions_paths.values(), self.image_path]:
            if p is not None:
                with PILImage.open(p) as im:
                    return im.height, im.width
        raise InputError(f"{self.name}: no mask or image to take the size from")

    def capsule(self, reference: Reference = "sonographer1") -> np.ndarray:
        """Kidney capsule mask, ``bool`` ``(H, W)``, from the published PNGs.

        Args:
            reference: ``"sonographer1"``, ``"sonographer2"``, their ``"intersection"`` or
                ``"union"``, or ``"staple"`` (SimpleITK's STAPLE of the two, probability
                >= 0.5; Warfield et al. 2004).

        Raises:
            InputError: unknown reference, or a sonographer's mask is missing.
        """
        return _combine({k: self._mask(self.capsule_paths, k) > 0 for k in _needed(reference, self.name)}, reference)

    def regions(self, sonographer: int = 1) -> np.ndarray:
        """Published region mask of one sonographer, ``uint8`` ``(H, W)`` with the values of
        :data:`REGION_LABELS` (0 elsewhere, including capsule-only pixels)."""
        return self._mask(self.regions_paths, sonographer)

    def _mask(self, paths: dict[int, Path], k: int) -> np.ndarray:
        if k not in paths:
            raise InputError(f"{self.name}: no mask of sonographer {k}")
        return read_mask_png(paths[k])


def _needed(reference: str, name: str) -> tuple[int, ...]:
    if reference not in REFERENCES:
        raise InputError(f"reference: unknown {reference!r} (expected one of {', '.join(REFERENCES)}) for {name}")
    return {"sonographer1": (1,), "sonographer2": (2,)}.get(reference, (1, 2))


def _combine(masks: dict[int, np.ndarray], reference: str) -> np.ndarray:
    if reference in ("sonographer1", "sonographer2"):
        return next(iter(masks.values()))
    a, b = masks[1], masks[2]
    if reference == "intersection":
        return a & b
    if reference == "union":
        return a | b
    return staple([a, b])


def staple(masks: Iterable[np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """STAPLE consensus of binary masks (SimpleITK ``STAPLEImageFilter``).

    Args:
        masks: ``bool`` arrays of one shape (2D or 3D).
        threshold: probability at or above which a pixel is foreground.

    Returns:
        ``bool`` array of the same shape. Where every rater agrees the result is that answer;
        an all-empty set of masks gives an empty mask.
    """
    import SimpleITK as sitk

    masks = [np.asarray(m, dtype=bool) for m in masks]
    if not any(m.any() for m in masks):
        return np.zeros_like(masks[0])
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    prob = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks]))
    return prob >= threshold


def read_mask_png(path: Path) -> np.ndarray:
    """A mask PNG as ``uint8`` ``(H, W)`` (first channel of an RGB(A) file).

    Raises:
        InputError: the file is missing or not an image.
    """
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            a = np.asarray(im)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    if a.ndim == 3:
        a = a[..., 0]
    return a.astype(np.uint8)


_LEADING = re.compile(r"^(\d+)_")


def patient_id(filename: str) -> str:
    """Patient key of a file name: its leading number (``"130_IM-0650-0033_anon.png"`` ->
    ``"130"``).

    The data set's README states one image per patient; 23 leading numbers occur twice in
    the release, so images that share one are kept in the same split. A name without a
    leading number is its own patient.
    """
    m = _LEADING.match(filename)
    return m.group(1) if m else filename


@dataclass
class CSVProblem:
    """A row of a VIA CSV file that could not be used (``skipped``), or whose file
    attributes contradict an earlier row of the same image (kept: the first row's
    attributes are used; the release has such rows, e.g. two views for one image)."""

    path: Path
    row: int
    reason: str
    skipped: bool = True

    def __str__(self) -> str:
        return f"{self.path}: row {self.row}: {self.reason}"


def _json_field(text: str, what: str) -> dict:
    if not text.strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _shape_from(shape: dict, anatomy: str, row: int) -> Shape | None:
    kind = shape.get("name")
    if kind is None:
        return None
    if kind == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not isinstance(xs, list) or not isinstance(ys, list):
            raise ValueError("polygon without all_points_x / all_points_y lists")
        if len(xs) != len(ys):
            raise ValueError(f"polygon has {len(xs)} x but {len(ys)} y coordinates")
        if len(xs) < 3:
            raise ValueError(f"polygon has {len(xs)} vertices (at least 3 needed)")
        pts = np.asarray([xs, ys], dtype=float)
        if not np.isfinite(pts).all() or (pts < 0).any():
            raise ValueError("polygon has a non-finite or negative coordinate")
        return Shape(anatomy, "polygon", tuple(pts[0]), tuple(pts[1]), row)
    if kind == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        if w <= 0 or h <= 0:
            raise ValueError(f"rect of size {w} x {h}")
        return Shape(anatomy, "rect", (x, x + w, x + w, x), (y, y, y + h, y + h), row)
    raise ValueError(f"unsupported VIA shape {kind!r}")


def read_via_csv(path: str | Path, errors: Literal["raise", "skip"] = "raise") -> tuple[dict[str, Annotation], list[CSVProblem]]:
    """Read a VGG Image Annotator CSV export.

    Args:
        path: the CSV file.
        errors: ``"raise"``: the first malformed row raises; ``"skip"``: malformed rows are
            left out and returned as problems.

    Returns:
        ``({filename: Annotation}, [CSVProblem, ...])``: skipped rows (``errors="skip"``) and
        rows whose ``file_attributes`` differ from the image's first row (``skipped`` false;
        the first row's quality, view and comments are used).

    Raises:
        InputError: missing file, missing columns, or (with ``errors="raise"``) a malformed
            row (bad JSON, a polygon whose x and y lists differ in length or that has fewer
            than 3 vertices, an unknown shape or anatomy); the message names file and row.
    """
    path = Path(path)
    need = {"filename", "file_attributes", "region_shape_attributes", "region_attributes"}
    try:
        f = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    problems: list[CSVProblem] = []
    files: dict[str, dict] = {}
    with f:
        reader = csv.DictReader(f)
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{path}: not a VIA CSV export (missing columns: {', '.join(sorted(missing))})")
        for row in reader:
            line = reader.line_num
            name = (row.get("filename") or "").strip()
            try:
                if not name:
                    raise ValueError("empty filename")
                attrs = _json_field(row["file_attributes"] or "", "file_attributes")
                region = _json_field(row["region_attributes"] or "", "region_attributes")
                anatomy_raw = str(region.get("Anatomy", "")).strip().lower()
                shape_json = _json_field(row["region_shape_attributes"] or "", "region_shape_attributes")
                if shape_json and anatomy_raw not in ANATOMY:
                    raise ValueError(f"unknown Anatomy {region.get('Anatomy')!r}")
                shape = _shape_from(shape_json, ANATOMY.get(anatomy_raw, ""), line)
            except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
                problem = CSVProblem(path, line, str(exc).split("\n")[0])
                if errors == "raise":
                    raise InputError(str(problem)) from None
                problems.append(problem)
                continue
            entry = files.setdefault(name, {"attrs": attrs, "shapes": [], "row": line})
            if attrs != entry["attrs"]:
                problems.append(CSVProblem(path, line, f"{name}: file_attributes {json.dumps(attrs)} differ from row "
                                           f"{entry['row']}'s {json.dumps(entry['attrs'])}; row {entry['row']}'s are used",
                                           skipped=False))
            if shape is not None:
                entry["shapes"].append(shape)
    out = {
        name: Annotation(str(e["attrs"].get("Quality", "")).strip(), str(e["attrs"].get("View", "")).strip(),
                         str(e["attrs"].get("Comments", "")).strip(), tuple(e["shapes"]))
        for name, e in files.items()
    }
    return out, problems


@dataclass
class KidneyUSDataset:
    """The Open Kidney Ultrasound annotations, joined with a user's image folder.

    Attributes:
        cases: file name -> :class:`KidneyUSCase`, sorted by name.
        missing_images: annotated file names with no image in the image folder (all of
            them when no folder is given).
        unannotated_images: images in the folder that no annotation mentions.
        problems: malformed CSV rows that were skipped (``errors="skip"`` only) and rows
            whose file attributes contradict the image's first row (see :class:`CSVProblem`).
    """

    cases: dict[str, KidneyUSCase]
    missing_images: list[str]
    unannotated_images: list[str]
    problems: list[CSVProblem]

    @classmethod
    def load(cls, labels_dir: str | Path, images_dir: str | Path | None = None,
             errors: Literal["raise", "skip"] = "raise") -> "KidneyUSDataset":
        """Read the annotation release (``reviewed_labels_{1,2}.csv`` and
        ``reviewed_masks_{1,2}/{capsule,regions}/``) and match images by file name.

        Raises:
            InputError: ``labels_dir`` holds neither CSV, a folder does not exist, or a
                malformed CSV row (with ``errors="raise"``).
        """
        labels_dir = Path(labels_dir)
        if not labels_dir.is_dir():
            raise InputError(f"{labels_dir}: no such folder")
        cases: dict[str, KidneyUSCase] = {}

        def case(name: str) -> KidneyUSCase:
            return cases.setdefault(name, KidneyUSCase(name, patient_id(name)))

        problems: list[CSVProblem] = []
        found_csv = False
        for k in SONOGRAPHERS:
            csv_path = labels_dir / f"reviewed_labels_{k}.csv"
            if csv_path.exists():
                found_csv = True
                anns, probs = read_via_csv(csv_path, errors=errors)
                problems += probs
                for name, ann in anns.items():
                    case(name).annotations[k] = ann
            for kind in ("capsule", "regions"):
                folder = labels_dir / f"reviewed_masks_{k}" / kind
                if folder.is_dir():
                    for p in folder.glob("*.png"):
                        getattr(case(p.name), f"{kind}_paths")[k] = p
        if not found_csv:
            raise InputError(f"{labels_dir}: no reviewed_labels_1.csv or reviewed_labels_2.csv (not an Open Kidney US label folder)")
        unannotated: list[str] = []
        if images_dir is not None:
            images_dir = Path(images_dir)
            if not images_dir.is_dir():
                raise InputError(f"{images_dir}: no such folder")
            for p in sorted(images_dir.iterdir()):
                if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
                    if p.name in cases:
                        cases[p.name].image_path = p
                    else:
                        unannotated.append(p.name)
        cases = dict(sorted(cases.items()))
        missing = [n for n, c in cases.items() if c.image_path is None]
        return cls(cases, missing, unannotated, problems)

    def split(self, seed: int = 0, sizes: tuple[int, int, int] = PAPER_SPLIT) -> dict[str, list[str]]:
        """Seeded patient-level train / validation / test split.

        Patients (:func:`patient_id`) are shuffled with ``numpy.random.default_rng(seed)``
        and dealt into the three sets in proportion to ``sizes`` (seed 003: 295 / 60 / 159
        of 514 images), so no patient's images are in two sets.

        Returns:
            ``{"train": [...], "validation": [...], "test": [...]}`` of file names (sorted).
        """
        if len(sizes) != 3 or min(sizes) < 0 or sum(sizes) == 0:
            raise InputError(f"split sizes: expected three non-negative counts, got {sizes}")
        groups: dict[str, list[str]] = {}
        for name, c in self.cases.items():
            groups.setdefault(c.patient_id, []).append(name)
        order = sorted(groups)
        np.random.default_rng(seed).shuffle(order)
        n = len(self.cases)
        targets = np.cumsum(np.asarray(sizes, dtype=float) / sum(sizes)) * n
        out: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
        keys = list(out)
        taken = 0
        for pid in order:
            which = next((i for i, t in enumerate(targets) if taken < t - 1e-9), 2)
            out[keys[which]] += groups[pid]
            taken += len(groups[pid])
        return {k: sorted(v) for k, v in out.items()}


__all__ = ["ANATOMY", "Annotation", "CSVProblem", "KidneyUSCase", "KidneyUSDataset", "PAPER_SPLIT", "REFERENCES",
           "REGION_LABELS", "Shape", "patient_id", "read_mask_png", "read_via_csv", "staple"]
