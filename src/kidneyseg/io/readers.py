"""Readers: NIfTI (nibabel), DICOM series folders (SimpleITK/GDCM) and PAR/REC (nibabel)
into one :class:`~kidneyseg.io.image.Image`.

Every failure is an :class:`~kidneyseg.errors.InputError` whose message starts with the
path and names the problem in one line. Files are opened read-only; nothing is written.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .image import Image
from .orientation import LPS_TO_RAS

log = logging.getLogger(__name__)


def read_image(path: str | Path, dtype: type | None = None, series_uid: str | None = None,
               volume: int | None = None) -> Image:
    """Read a NIfTI file, a DICOM series folder or a PAR/REC file.

    Args:
        path: ``.nii``/``.nii.gz`` file, ``.PAR`` (or ``.REC``) file, or a folder holding
            one DICOM series (or several, with ``series_uid``).
        dtype: numpy dtype of the returned array; ``None`` keeps the stored type (with the
            NIfTI scaling applied). Use ``np.float32`` for images fed to a model: the file is
            converted directly, never through a float64 copy when it is stored narrower.
        series_uid: which series of a DICOM folder with several: a SeriesInstanceUID or a
            rule, ``"largest"`` or ``"description:TEXT"`` (see :func:`resolve_series`).
        volume: 1-based; the volume of a 4D NIfTI file (its last axis), or the image set of
            a DICOM series holding several images per slice position (echoes, magnitude and
            phase, inversion times: :mod:`kidneyseg.io.image_sets`). ``None``: a 4D file is
            returned 4D (:func:`check_volume` refuses it); a multi-echo DICOM series gives
            image set 1, the magnitude of the shortest echo.

    Returns:
        :class:`Image` with the array in the file's own voxel axis order (``(X, Y, Z)`` for
        NIfTI, ``(columns, rows, slices)`` for DICOM, as ITK orders them), the voxel-to-RAS+
        affine in mm and ``source=path``.

    Raises:
        InputError: missing path, unsupported type, unreadable, truncated or corrupt file;
            ``volume`` out of range or given for a file with one volume.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if volume is not None and volume < 1:
        raise InputError(f"{p}: --volume {volume}: volumes are numbered from 1")
    if p.is_dir():
        with dicom_folder(p) as folder:  # a CD/PACS export tree: its files side by side
            try:
                image = _read_dicom_series(folder, dtype, series_uid, volume)
            except InputError as exc:
                raise InputError(str(exc).replace(str(folder), str(p))) from None
        return Image(image.array, image.affine, p, None, image.modality)
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    low = p.name.lower()
    if low.endswith((".nii", ".nii.gz")):
        return _read_nifti(p, dtype, volume)
    if low.endswith((".par", ".rec")):
        return _read_parrec(p, dtype, volume)
    if low.endswith(".dcm"):
        return _read_dicom_series(p.parent, dtype, series_uid or dicom_file_series(p), volume)
    raise InputError(
        f"{p}: unsupported file type (expected .nii, .nii.gz, .PAR/.REC or a DICOM folder)"
    )


def _load_array(img: nib.spatialimages.SpatialImage, p: Path, dtype: type | None, volume: int | None = None) -> np.ndarray:
    stored = np.dtype(img.get_data_dtype())
    if stored.kind not in "biuf":
        what = "RGB/structured" if stored.kind == "V" else str(stored)
        raise InputError(f"{p}: unsupported voxel type {what} (expected integer or float intensities)")
    try:
        if volume is not None:  # one volume of a 4D file: nibabel's proxy reads only that slab
            data = np.asanyarray(img.dataobj[..., volume - 1])
            return data if dtype is None else data.astype(dtype, copy=False)
        if dtype is None:
            return np.asanyarray(img.dataobj)
        if np.issubdtype(np.dtype(dtype), np.floating):
            return img.get_fdata(dtype=dtype)
        return np.asanyarray(img.dataobj).astype(dtype)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(f"{p}: truncated or corrupt image data ({exc.__class__.__name__}: {exc})") from None


GZIP_MAX_RATIO = 1040
"""Deflate cannot expand data by more than about 1032:1; a ``.nii.gz`` whose header claims more
voxel bytes than this many times its own size is a bomb or a lie."""

MEMORY_FRACTION = 0.8
"""A volume whose float32 copy would need more than this share of the machine's physical memory
is refused before anything is allocated."""


def physical_memory_bytes() -> int:
    """Total physical memory (``os.sysconf``); 0 where the platform does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_claimed_size(img: nib.spatialimages.SpatialImage, p: Path) -> None:
    """Refuse a NIfTI file whose header claims more voxel data than the file can hold or this
    machine can load, before any voxel is read (a 1 kB header must not allocate gigabytes).

    Checks, with Python integers (no overflow): every dimension positive; an uncompressed file
    at least ``vox_offset + voxels x itemsize`` bytes long; a gzip file no more than
    :data:`GZIP_MAX_RATIO` times smaller than the claimed data; the float32 copy below
    :data:`MEMORY_FRACTION` of physical memory.

    Raises:
        InputError: one line naming the file, the claimed size and the limit it breaks.
    """
    shape = [int(v) for v in img.shape]
    if not shape or any(v <= 0 for v in shape):
        raise InputError(f"{p}: header dimensions {shape} are not all positive")
    voxels = 1
    for v in shape:
        voxels *= v
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    claimed = voxels * itemsize
    size = p.stat().st_size
    gib = lambda n: f"{n / 2 ** 30:.3g} GiB"  # noqa: E731
    if p.name.lower().endswith(".gz"):
        if claimed > GZIP_MAX_RATIO * size + (1 << 20):
            raise InputError(f"{p}: header claims {gib(claimed)} of voxel data ({'x'.join(map(str, shape))}), more than a "
                             f"{size}-byte gzip file can hold")
    else:
        offset = int(getattr(img.header, "get_data_offset", lambda: 0)())
        if offset + claimed > size:
            raise InputError(f"{p}: truncated: the header claims {claimed} bytes of voxel data "
                             f"({'x'.join(map(str, shape))}), the file holds {max(size - offset, 0)}")
    memory = physical_memory_bytes()
    needed = voxels * (4 + itemsize)
    if memory and needed > MEMORY_FRACTION * memory:
        raise InputError(f"{p}: {'x'.join(map(str, shape))} voxels need about {gib(needed)} to load, more than "
                         f"{MEMORY_FRACTION:.0%} of this machine's {gib(memory)} memory")


def warn_handedness(img: nib.spatialimages.SpatialImage, p: Path) -> bool:
    """Log one warning when a NIfTI file's qform and sform are both set and disagree on
    handedness (determinants of opposite sign: they put the patient's left and right on
    opposite sides). The sform is used, as nibabel's ``img.affine`` does; the warning says so.

    Returns:
        True when the two disagree.
    """
    header = img.header
    if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
        return False
    q, sf = header.get_qform(), header.get_sform()
    dq, ds = float(np.linalg.det(q[:3, :3])), float(np.linalg.det(sf[:3, :3]))
    if not (np.isfinite(dq) and np.isfinite(ds)) or dq * ds >= 0:
        return False
    log.warning("warning: %s: qform and sform disagree on left and right (determinants of opposite sign); using the "
                "sform (sform_code %d), as nibabel does: check the sides in the overlay", p, int(header["sform_code"]))
    return True


def check_nifti_spacing(img: nib.spatialimages.SpatialImage, p: Path) -> None:
    """Raise :class:`InputError` if a NIfTI file has no voxel spacing.

    With neither a qform nor an sform, the affine comes from ``pixdim``; nibabel silently
    replaces zero or missing ``pixdim`` entries by 1 mm (with a warning), which would make
    every volume in mL wrong. Here that is an error naming the file.
    """
    header = img.header
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return
    if int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0:
        return
    from nibabel.openers import ImageOpener

    with ImageOpener(str(p)) as f:  # the header as stored: nibabel's loaded copy is already "fixed"
        raw = type(header).from_fileobj(f, check=False)
    n = min(len(img.shape), 3)
    pixdim = np.asarray(raw["pixdim"][1:1 + n], float)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):
        problem = ("non-finite" if not np.all(np.isfinite(pixdim)) else
                   "negative" if np.any(pixdim < 0) else "missing")
        raise InputError(f"{p}: {problem} voxel spacing (pixdim {pixdim.tolist()}, no qform or sform); "
                         "set the spacing in the header")


def _volume_index(img: nib.spatialimages.SpatialImage, p: Path, volume: int | None) -> int | None:
    """``volume`` (1-based) checked against a nibabel image's last axis: the volume to slice
    out of a 4D file, ``None`` for no choice or a 3D file asked for its one volume.

    Raises:
        InputError: more volumes asked for than the file holds, or a file of more than 4D.
    """
    if volume is None:
        return None
    count = img.shape[3] if len(img.shape) == 4 else 1
    if len(img.shape) > 4 or volume > count:
        raise InputError(f"{p}: --volume {volume}: the file holds {count} volume(s) (shape {tuple(img.shape)})")
    return volume if len(img.shape) == 4 else None


def _read_nifti(p: Path, dtype: type | None, volume: int | None = None) -> Image:
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises many types for a non-NIfTI file
        raise InputError(f"{p}: not a readable NIfTI file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{p}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    check_claimed_size(img, p)
    if not np.all(np.isfinite(img.affine)):
        source = "sform" if int(img.header["sform_code"]) > 0 else "qform" if int(img.header["qform_code"]) > 0 else "pixdim"
        raise InputError(f"{p}: the affine ({source}) holds NaN or Inf values; no geometry to work in mm")
    check_nifti_spacing(img, p)
    warn_handedness(img, p)
    header = img.header.copy()
    volume = _volume_index(img, p, volume)
    if volume is not None:
        header.set_data_shape(img.shape[:3])
    array = _load_array(img, p, dtype, volume)
    return Image(array, img.affine, p, header, "")


def _read_parrec(p: Path, dtype: type | None, volume: int | None = None) -> Image:
    try:
        img = nib.load(str(p))
    except Exception as exc:
        raise InputError(f"{p}: not a readable PAR/REC file ({exc.__class__.__name__}: {exc})") from None
    array = _load_array(img, p, dtype if dtype is not None else np.float32, _volume_index(img, p, volume))
    return Image(array, img.affine, p, None, "MR")


ZIP_MEMBER_MAX_BYTES = 2 * 2 ** 30
"""Largest unpacked member of a DICOM ``.zip`` that is extracted (2 GiB)."""


def _nested_dicom_tree(p: Path) -> bool:
    """True for a folder whose DICOM files lie in its subfolders only (a CD or PACS export:
    ``DICOMDIR`` beside ``DICOM/``, ``IMAGES/`` or one folder per series), which GDCM, scanning
    one folder, would call empty."""
    import SimpleITK as sitk

    if not p.is_dir() or not any(q.is_dir() for q in p.iterdir()):
        return False
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        return not sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))
    except RuntimeError:
        return True


@contextlib.contextmanager
def dicom_folder(path: str | Path):
    """A DICOM folder for ``path``: the folder itself; for a folder whose DICOM files lie in
    subfolders only (a CD or PACS export), its files at any depth linked side by side into a
    temporary folder; or the files of a ``.zip`` (at any depth of its folders) extracted side
    by side into a temporary folder. Temporary folders are removed afterwards. An archive with
    absolute or ``..`` member names is refused. The files themselves are never modified.

    Raises:
        InputError: a corrupt zip, or an unsafe member name.
    """
    import os
    import shutil
    import tempfile
    import zipfile

    p = Path(path)
    if _nested_dicom_tree(p):
        with tempfile.TemporaryDirectory(prefix="kidneyseg-tree-") as tmp:
            files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
            for i, q in enumerate(files):  # flattened: series are told apart by UID, as in a zip
                link = Path(tmp) / f"{i:06d}_{q.name}"
                try:
                    os.symlink(q.resolve(), link)
                except OSError:  # no symlinks on this file system: a copy, the source untouched
                    shutil.copyfile(q, link)
            yield Path(tmp)
        return
    if not (p.is_file() and p.suffix.lower() == ".zip"):
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="kidneyseg-zip-") as tmp:
        try:
            with zipfile.ZipFile(p) as z:
                members = [m for m in z.infolist() if not m.is_dir()]
                for m in members:
                    if m.filename.startswith(("/", "\\")) or ".." in Path(m.filename).parts:
                        raise InputError(f"{p}: unsafe member name {m.filename!r} (outside the archive's folder)")
                    if m.file_size > ZIP_MEMBER_MAX_BYTES:
                        raise InputError(f"{p}: member {m.filename!r} unpacks to {m.file_size} bytes, more than any "
                                         f"DICOM file ({ZIP_MEMBER_MAX_BYTES} bytes at most); refusing to extract it")
                for i, m in enumerate(members):  # flattened: GDCM scans one folder, series are told apart by UID
                    # streamed in 1 MiB chunks; zipfile stops at the declared size and checks the CRC
                    with z.open(m) as src, open(Path(tmp) / f"{i:06d}_{Path(m.filename).name}", "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        except zipfile.BadZipFile as exc:
            raise InputError(f"{p}: not a readable zip file ({exc})") from None
        yield Path(tmp)


def resolve_series(folder: str | Path, rule: str | None = None) -> str:
    """Choose one DICOM series in a folder.

    Args:
        folder: a folder of DICOM files.
        rule: ``None`` (the folder must hold exactly one series), a SeriesInstanceUID,
            ``"largest"`` (the series with the most files; ties raise), or
            ``"description:TEXT"`` (the one series whose SeriesDescription contains TEXT,
            case-insensitive).

    Returns:
        The SeriesInstanceUID.

    Raises:
        InputError: no series; several and no rule; a rule that matches none or several
            (the message lists every series with its description and file count).

    Library: SimpleITK/GDCM (series discovery), pydicom (descriptions).
    """
    import pydicom
    import SimpleITK as sitk

    folder = Path(folder)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as exc:
        raise InputError(f"{folder}: cannot scan folder for DICOM ({exc})") from None
    if not uids:
        raise InputError(f"{folder}: folder holds no DICOM series and no image file was given")
    if rule is None and len(uids) == 1:
        return uids[0]
    info = {}
    for uid in uids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        try:
            desc = str(pydicom.dcmread(files[0], stop_before_pixels=True).get("SeriesDescription", ""))
        except Exception:  # an unreadable header leaves the description empty
            desc = ""
        info[uid] = (len(files), desc)
    listing = "; ".join(f"{u} ({n} files, {d!r})" for u, (n, d) in info.items())
    if rule is None:
        raise InputError(f"{folder}: holds {len(uids)} DICOM series: {listing}; choose one with --series "
                         "UID | largest | description:TEXT")
    if rule == "largest":
        most = max(n for n, _ in info.values())
        best = [u for u, (n, _) in info.items() if n == most]
        if len(best) > 1:
            raise InputError(f"{folder}: --series largest: {len(best)} series have {most} files: {listing}")
        return best[0]
    if rule.startswith("description:"):
        text = rule.split(":", 1)[1].strip().lower()
        hits = [u for u, (_, d) in info.items() if text and text in d.lower()]
        if len(hits) != 1:
            raise InputError(f"{folder}: --series {rule}: {len(hits)} series match: {listing}")
        return hits[0]
    if rule not in info:
        raise InputError(f"{folder}: no DICOM series {rule} (found: {listing})")
    return rule


def _check_geometry_tags(folder: Path, reader, files: list[str]) -> None:
    """Raise unless every slice of a multi-file series has ImagePositionPatient and
    ImageOrientationPatient, all slices one ImageOrientationPatient (ITK would stack mixed ones
    as if they agreed) and one PixelSpacing.

    Without the position and orientation, GDCM/ITK stack the slices 1 mm apart in an
    assumed orientation, so volumes in mL and the patient's left and right would be
    guesses (a 24 mL kidney read as 3 mL); one slice with another PixelSpacing would set the
    whole volume's in-plane spacing. A single file (one slice, or a multi-frame object whose
    geometry is per frame) is left to GDCM.
    """
    n = len(files)
    if n < 2:
        return
    spacing = first = None
    for i in range(n):
        name = Path(files[i]).name
        missing = [tag for key, tag in (("0020|0032", "ImagePositionPatient"), ("0020|0037", "ImageOrientationPatient"))
                   if not reader.HasMetaDataKey(i, key) or not reader.GetMetaData(i, key).strip()]
        if missing:
            raise InputError(f"{folder}: slice {name} has no {' or '.join(missing)}, so slice spacing and orientation "
                             "are unknown (a reader would assume 1 mm); refusing rather than guessing")
        try:
            iop = np.array([float(v) for v in reader.GetMetaData(i, "0020|0037").split("\\")])
        except ValueError:
            raise InputError(f"{folder}: unreadable ImageOrientationPatient in slice {i + 1}") from None
        if first is None:
            first = iop
        elif iop.shape != first.shape or np.abs(iop - first).max() > 1e-3:
            raise InputError(f"{folder}: mixed orientations in one series: slice {i + 1} has ImageOrientationPatient "
                             f"{np.round(iop, 4).tolist()}, slice 1 {np.round(first, 4).tolist()}")
        if reader.HasMetaDataKey(i, "0028|0030"):
            try:
                sp = np.array([float(v) for v in reader.GetMetaData(i, "0028|0030").split("\\")])
            except ValueError:
                raise InputError(f"{folder}: unreadable PixelSpacing in slice {name}") from None
            if spacing is None:
                spacing = (sp, name)
            elif sp.shape != spacing[0].shape or np.abs(sp - spacing[0]).max() > 1e-4:
                raise InputError(f"{folder}: mixed PixelSpacing in one series: slice {name} has "
                                 f"{np.round(sp, 4).tolist()} mm, slice {spacing[1]} {np.round(spacing[0], 4).tolist()} mm")


def _check_slice_positions(folder: Path, reader, n: int, normal: np.ndarray) -> None:
    """Raise if the sorted slices of a series are not evenly spaced: a missing slice, or
    uneven spacing, would otherwise give a volume with the wrong geometry (ITK only warns)."""
    if n < 3:
        return
    pos = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return  # no ImagePositionPatient (e.g. a single multi-frame file): nothing to check
        try:
            pos.append(float(np.dot(normal, [float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")])))
        except ValueError:
            raise InputError(f"{folder}: unreadable ImagePositionPatient in slice {i + 1}") from None
    gaps = np.diff(np.sort(np.asarray(pos)))
    step = float(np.median(gaps))
    if step <= 0:
        raise InputError(f"{folder}: several slices share one position (duplicate or mixed series)")
    worst = int(np.argmax(np.abs(gaps - step)))
    if abs(gaps[worst] - step) > 0.01 * step + 1e-3:
        kind = "missing slice(s)" if gaps[worst] > 1.5 * step else "uneven slice spacing"
        raise InputError(f"{folder}: {kind}: gap of {gaps[worst]:.3g} mm after slice {worst + 1} of {n}, "
                         f"others {step:.3g} mm")


def dicom_file_series(p: Path) -> str:
    """The SeriesInstanceUID of one ``.dcm`` file given as input (its series is read, not
    whichever series its folder holds).

    Raises:
        InputError: not DICOM, or not an image (a structured report, a SEG, a presentation
            state: no pixel data to segment).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as exc:
        raise InputError(f"{p}: not a readable DICOM file ({exc.__class__.__name__})") from None
    modality = str(getattr(ds, "Modality", "") or "")
    if "Rows" not in ds or "Columns" not in ds or modality in ("SR", "SEG", "PR", "KO", "RTSTRUCT"):
        raise InputError(f"{p}: a DICOM {modality or 'object'} without an image to segment "
                         f"(SOP class {getattr(ds, 'SOPClassUID', 'unknown')}); give an image series")
    uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
    if not uid:
        raise InputError(f"{p}: DICOM image without a SeriesInstanceUID")
    return uid


def dicom_image_sets(folder: str | Path, series_uid: str | None = None):
    """The image sets of one series of a DICOM folder (:func:`resolve_series`, then
    :func:`kidneyseg.io.image_sets.image_sets`).

    Returns:
        ``(series_uid, [ImageSet, ...])``: one set for an ordinary series.

    Raises:
        InputError: as :func:`resolve_series` and :func:`~kidneyseg.io.image_sets.image_sets`.
    """
    import SimpleITK as sitk

    from .image_sets import image_sets

    folder = Path(folder)
    series_uid = resolve_series(folder, series_uid)
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return series_uid, image_sets(files, folder)


def dicom_image_set(folder: str | Path, series_uid: str | None = None, volume: int | None = None):
    """The files of one volume of a DICOM folder: its series (:func:`resolve_series`), and of
    a series holding several images per slice position (echoes, magnitude and phase), one
    image set (:func:`kidneyseg.io.image_sets.choose_image_set`).

    Returns:
        ``(series_uid, ImageSet)``; ``ImageSet.files`` in the order the volume's slices are read.

    Raises:
        InputError: as :func:`resolve_series` and :func:`~kidneyseg.io.image_sets.choose_image_set`.
    """
    from .image_sets import choose_image_set

    series_uid, sets = dicom_image_sets(folder, series_uid)
    return series_uid, choose_image_set(sets, volume, folder)


def _read_dicom_series(folder: Path, dtype: type | None, series_uid: str | None, volume: int | None = None) -> Image:
    return read_dicom_image_set(folder, dicom_image_set(folder, series_uid, volume)[1], dtype)


def read_dicom_image_set(folder: str | Path, chosen, dtype: type | None = None) -> Image:
    """Read one image set chosen by :func:`dicom_image_set` (no second look at the folder).

    Returns:
        :class:`Image` ``(columns, rows, slices)``, voxel-to-RAS+ affine, ``source=folder``.

    Raises:
        InputError: unreadable pixel data, missing or inconsistent geometry, uneven slices.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if chosen.frames is not None:  # an enhanced multi-frame object: its frames, not GDCM's stack of them
        from .image_sets import read_frames

        array, lps, modality = read_frames(chosen, folder, dtype)
        return Image(array, LPS_TO_RAS @ lps, folder, None, modality)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # failures surface as InputError below
    reader = sitk.ImageSeriesReader()
    files = chosen.files
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        sitk_img = reader.Execute()  # GDCM sorts by position and applies rescale slope/intercept
    except RuntimeError as exc:
        raise InputError(f"{folder}: unreadable DICOM series ({str(exc).strip().splitlines()[-1]})") from None
    if sitk_img.GetDimension() != 3:  # e.g. a multi-frame object without per-frame positions (cine, legacy)
        raise InputError(f"{folder}: {Path(files[0]).name}: a multi-frame DICOM object without per-frame slice "
                         f"positions ({sitk_img.GetDimension()}D, size {sitk_img.GetSize()}); its geometry is unknown")
    _check_geometry_tags(folder, reader, list(files))
    _check_slice_positions(folder, reader, len(files), np.array(sitk_img.GetDirection()).reshape(3, 3)[:, 2])
    image = sitk_to_image(sitk_img, dtype)
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    return Image(image.array, image.affine, folder, None, modality)


def sitk_to_image(img, dtype: type | None = None) -> Image:
    """A SimpleITK image as an :class:`Image`: the array ``(z, y, x)`` transposed to ``(x, y, z)``,
    the affine from direction, spacing and origin (ITK's LPS) turned into RAS+."""
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise InputError(f"SimpleITK image: expected 3 dimensions, got {img.GetDimension()}")
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    lps = np.eye(4)
    lps[:3, :3] = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3) * np.array(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return Image(np.ascontiguousarray(array), LPS_TO_RAS @ lps, None, None, "")


def check_volume(image: Image, what: str = "image") -> Image:
    """Validate a volume for segmentation; squeeze trailing singleton axes of 4D input.

    Args:
        image: as returned by :func:`read_image`.
        what: word used in messages (``"image"``, ``"reference mask"``).

    Returns:
        The image, 3D.

    Raises:
        InputError: not 3D (2D or a true 4D series), a dimension of size 0, NaN or Inf
            voxels, all voxels equal (e.g. all zero), non-finite, zero or negative spacing,
            or a singular affine.
    """
    src = image.source if image.source is not None else what
    arr = image.array
    if arr.ndim > 3 and all(s == 1 for s in arr.shape[3:]):
        arr = arr.reshape(arr.shape[:3])
        image = Image(arr, image.affine, image.source, image.nifti_header, image.modality)
    if arr.ndim != 3:
        hint = "; choose one volume with --volume N" if arr.ndim == 4 and what == "image" else ""
        raise InputError(f"{src}: expected a 3D {what}, got {arr.ndim}D with shape {tuple(arr.shape)}{hint}")
    if min(arr.shape) == 0:
        raise InputError(f"{src}: {what} has an empty dimension, shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{src}: unsupported voxel type {arr.dtype} (expected integer or float)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{src}: {what} has {n_bad} NaN or Inf voxels")
    if arr.max() == arr.min():
        raise InputError(f"{src}: {what} is constant (every voxel is {arr.flat[0]!r}), nothing to segment")
    aff = image.affine
    if not np.isfinite(aff).all():
        raise InputError(f"{src}: affine has non-finite entries")
    det = np.linalg.det(aff[:3, :3])
    if not np.isfinite(det) or abs(det) < 1e-9:
        raise InputError(f"{src}: singular affine (zero voxel volume); spacing_mm {image.spacing_mm}")
    return image
