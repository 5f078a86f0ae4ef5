"""Dataset layouts for supervised training: CHAOS (as in ``../shared/data/chaos_t2``),
KiTS (``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``, as in the KiTS19/21/23
repositories and ``../shared/data/kits_masks``) and the nnU-Net raw layout (``imagesTr/``,
``labelsTr/``, ``dataset.json``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..labels import CHAOS_MR, KITS, remap


@dataclass(frozen=True)
class Case:
    """One training case.

    Attributes:
        case_id: patient/case identifier (cross-validation splits by it).
        image: image path; ``None`` only for a mask-only case listed with
            ``require_images=False`` (geometry fingerprints of annotation releases).
        label: label mask path.
        label_values: ``{file label value: kidneyseg label value}``; values not listed
            become background.
        file_labels: the file's own label map, value -> structure name (used for
            auxiliary training classes such as liver and spleen).
        label_parts: for datasets with one binary mask file per structure (ukat): ``(path,
            value)`` pairs combined into one label image of those values (``label`` is the
            first of them); empty for one label file.
        labelled_slices: ``(axis, indices)`` when only those slices (array axis of the image
            file) were drawn, e.g. ukat's single-slice masks; ``None``: the whole volume.
    """

    case_id: str
    image: Path | None
    label: Path
    label_values: dict[int, int]
    file_labels: dict[int, str] = field(default_factory=dict)
    label_parts: tuple[tuple[Path, int], ...] = ()
    labelled_slices: tuple[int, tuple[int, ...]] | None = None

    def kidneyseg_labels(self, mask) -> np.ndarray:
        """The case's label mask with its file values replaced by kidneyseg label values.

        Args:
            mask: integer label array as read from ``label`` (any shape, any axis order: the
                values are mapped one by one, so the shape and axes are kept).

        Returns:
            ``uint8`` array of the same shape; file values that ``label_values`` does not list
            become 0 (background). Source: ``skimage.util.map_array``.
        """
        from skimage.util import map_array

        return map_array(np.asarray(mask).astype(np.int64), np.array(list(self.label_values), np.int64),
                         np.array(list(self.label_values.values()), np.uint8))


def check_label_values(case: Case, values) -> None:
    """Raise :class:`InputError` naming ``case.label`` if a value in ``values`` (the mask's
    unique values) is not 0 and not in the dataset's own label map ``case.file_labels``; a case
    without a label map is not checked."""
    if not case.file_labels:
        return
    allowed = set(case.file_labels) | {0}
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        raise InputError(f"{case.label}: label value(s) {bad} not in the dataset's labels {sorted(allowed)}")


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def chaos_cases(folder: str | Path, label_map: dict[int, str]) -> list[Case]:
    """Cases of a CHAOS-style folder: ``image_N.nii.gz`` + ``label_N.nii.gz``.

    CHAOS MR labels: 1 liver, 2 right kidney, 3 left kidney, 4 spleen
    (:data:`kidneyseg.labels.CHAOS_MR`); they are mapped onto ``label_map`` by name.

    Raises:
        InputError: the folder is missing or holds no image/label pairs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: dataset folder not found")
    values = remap(CHAOS_MR, label_map)
    cases = []
    for img in sorted(folder.glob("image_*.nii*"), key=lambda p: _natural_key(p.name)):
        cid = re.sub(r"\.nii(\.gz)?$", "", img.name)[len("image_"):]
        lbl = next(iter(folder.glob(f"label_{cid}.nii*")), None)
        if lbl is None:
            raise InputError(f"{img}: no matching label_{cid}.nii.gz")
        cases.append(Case(cid, img, lbl, values, dict(CHAOS_MR)))
    if not cases:
        raise InputError(f"{folder}: no image_N.nii.gz files (CHAOS layout)")
    return cases


def nnunet_cases(folder: str | Path, label_map: dict[int, str]) -> list[Case]:
    """Cases of an nnU-Net raw dataset folder (single input channel ``_0000``).

    ``dataset.json["labels"]`` maps names to values (nnU-Net v2) or values to names (v1);
    names are matched to ``label_map``.

    Raises:
        InputError: missing ``dataset.json``/folders, several input channels, or no case.
    """
    folder = Path(folder)
    meta = folder / "dataset.json"
    if not meta.is_file():
        raise InputError(f"{folder}: not an nnU-Net dataset (missing dataset.json)")
    labels = json.loads(meta.read_text()).get("labels", {})
    file_map: dict[int, str] = {}
    for k, v in labels.items():
        if str(k).isdigit():
            file_map[int(k)] = str(v)
        else:
            file_map[int(v)] = str(k)
    values = remap(file_map, label_map)
    if not values:
        raise InputError(f"{meta}: no label named {sorted(label_map.values())}")
    cases = []
    for img in sorted((folder / "imagesTr").glob("*.nii*"), key=lambda p: _natural_key(p.name)):
        stem = re.sub(r"\.nii(\.gz)?$", "", img.name)
        if not stem.endswith("_0000"):
            if re.search(r"_\d{4}$", stem):
                continue
            raise InputError(f"{img}: expected the nnU-Net channel suffix _0000")
        cid = stem[:-5]
        lbl = next(iter((folder / "labelsTr").glob(f"{cid}.nii*")), None)
        if lbl is None:
            raise InputError(f"{img}: no matching labelsTr/{cid}.nii.gz")
        cases.append(Case(cid, img, lbl, values, file_map))
    if not cases:
        raise InputError(f"{folder / 'imagesTr'}: no training images")
    return cases


def kits_cases(folder: str | Path, label_map: dict[int, str] | None = None,
               require_images: bool = True) -> list[Case]:
    """Cases of a KiTS folder: ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``.

    KiTS labels: 1 kidney, 2 tumor, 3 cyst (:data:`kidneyseg.labels.KITS`; KiTS19 has no
    cysts). KiTS19 files store the axes in (z, y, x) order with an IPL affine; nothing here
    assumes an axis order: readers go through the affine (:func:`kidneyseg.io.to_canonical`).

    Args:
        folder: the folder holding the ``case_*`` folders (KiTS19 ``data/``, KiTS23
            ``dataset/``).
        label_map: kidneyseg label map the file labels are mapped onto by name; default
            :data:`~kidneyseg.labels.KITS` itself.
        require_images: if False, cases with a segmentation but no ``imaging.nii.gz`` are
            kept with ``image=None`` (the annotation releases in ``../shared/data``).

    Raises:
        InputError: the folder is missing, holds no case with a segmentation, or (with
            ``require_images``) a case lacks its ``imaging.nii.gz``; the message names it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: dataset folder not found")
    values = remap(KITS, label_map or KITS)
    cases = []
    for d in sorted(folder.glob("case_*"), key=lambda p: _natural_key(p.name)):
        seg = next(iter(sorted(d.glob("segmentation.nii*"))), None)
        if not d.is_dir() or seg is None:
            continue
        img = next(iter(sorted(d.glob("imaging.nii*"))), None)
        if img is None and require_images:
            raise InputError(f"{d}: segmentation without imaging.nii.gz (KiTS layout; the images are "
                             "downloaded separately by the KiTS scripts)")
        cases.append(Case(d.name, img, seg, values, dict(KITS)))
    if not cases:
        raise InputError(f"{folder}: no case_XXXXX/segmentation.nii.gz (KiTS layout)")
    return cases


UKAT_LABELS: dict[int, str] = {1: "kidney_right", 2: "kidney_left"}
"""Values given to ukat's ``*_roi-R`` / ``*_roi-L`` masks when they are combined."""


def ukat_cases(folder: str | Path, label_map: dict[int, str], whole_only: bool = False) -> list[Case]:
    """Cases of the ukat kidney-mask layout (``../shared/data/ukat_kidney_masks``): one folder per
    scan holding ``*_e1.nii.gz`` and its ``*_e1_roi-R.nii.gz`` / ``*_e1_roi-L.nii.gz`` masks
    (UKRIN Kidney Analysis Toolbox, GPL-3.0).

    A scan whose masks lie in a single slice along the image's thickest axis is a single-slice
    case: ``labelled_slices`` names that slice, and the rest of the volume is unlabelled.
    The case id is the folder name (one scan; several may come from one volunteer).

    Args:
        folder: the dataset folder.
        label_map: kidneyseg label map the masks are mapped onto by name.
        whole_only: only the scans whose masks cover the whole kidneys.

    Raises:
        InputError: the folder is missing or holds no scan with both masks.
    """
    import nibabel as nib
    import numpy as np

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: dataset folder not found")
    values = remap(UKAT_LABELS, label_map)
    cases = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        img = next(iter(sorted(d.glob("*_e1.nii.gz"))), None)
        if img is None:
            continue
        stem = img.name[: -len(".nii.gz")]
        right, left = d / f"{stem}_roi-R.nii.gz", d / f"{stem}_roi-L.nii.gz"
        if not (right.is_file() and left.is_file()):
            continue
        head = nib.load(img)
        axis = int(np.argmax(head.header.get_zooms()[:3]))
        drawn = set()
        for m in (right, left):
            arr = np.asarray(nib.load(m).dataobj) > 0
            drawn |= set(np.flatnonzero(arr.any(axis=tuple(a for a in range(arr.ndim) if a != axis))).tolist())
        sliced = (axis, tuple(sorted(drawn))) if len(drawn) <= 1 else None
        if whole_only and sliced is not None:
            continue
        cases.append(Case(d.name, img, right, values, dict(UKAT_LABELS), ((right, 1), (left, 2)), sliced))
    if not cases:
        raise InputError(f"{folder}: no scan folder with *_e1.nii.gz and its roi-R / roi-L masks (ukat layout)")
    return cases


LAYOUTS = ("chaos", "kits", "nnunet", "ukat")


def list_cases(folder: str | Path, layout: str, label_map: dict[int, str]) -> list[Case]:
    """Dispatch on ``layout`` (one of :data:`LAYOUTS`)."""
    if layout == "chaos":
        return chaos_cases(folder, label_map)
    if layout == "nnunet":
        return nnunet_cases(folder, label_map)
    if layout == "kits":
        return kits_cases(folder, label_map)
    if layout == "ukat":
        return ukat_cases(folder, label_map)
    raise InputError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
