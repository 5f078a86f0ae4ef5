"""Writers. Every file is written atomically: to a hidden temporary file in the target
folder, then renamed over the target, so a crash never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

from ..errors import GeometryError, InputError
from .image import Image


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends, so that the bookkeeping of staged files
    (create + register, rename all, delete all) is never interrupted half-way."""
    sigs = {signal.SIGTERM, signal.SIGINT}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class AtomicOutputs:
    """Stage several output files and publish them together.

    ``path = outs.stage(target)`` returns a temporary path in the target's folder to write
    to; :meth:`commit` renames every staged file onto its target; :meth:`abort` (or an
    exception inside the ``with`` block) deletes the temporary files, so no partial output
    is ever left behind. Targets that already exist raise unless ``overwrite`` is true.
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []

    def stage(self, target: str | Path) -> Path:
        """Reserve a temporary file for ``target`` (same folder, same suffixes)."""
        target = Path(target)
        if target.exists() and not self.overwrite:
            raise InputError(f"{target}: output exists (use --overwrite to replace it)")
        if target.is_dir():
            raise InputError(f"{target}: output path is a folder")
        suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
        with signals_deferred():
            fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp" + suffix, dir=target.parent)
            self._staged.append((Path(tmp), target))
            os.close(fd)
        return Path(tmp)

    def commit(self) -> None:
        """Rename every staged file onto its target."""
        with signals_deferred():
            for tmp, target in self._staged:
                os.replace(tmp, target)
            self._staged.clear()

    def abort(self) -> None:
        """Delete every staged temporary file."""
        with signals_deferred():
            for tmp, _ in self._staged:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            self._staged.clear()

    def __enter__(self) -> "AtomicOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def atomic_path(target: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary path that replaces ``target`` on success."""
    with AtomicOutputs(overwrite=overwrite) as outs:
        yield outs.stage(target)


def mask_to_nifti(mask: np.ndarray, reference: Image) -> nib.Nifti1Image:
    """Build a NIfTI mask on exactly the reference's grid.

    Args:
        mask: integer labels, shape equal to ``reference.shape`` (3D).
        reference: the image the mask belongs to. A NIfTI reference's header is copied, so
            qform and sform (matrices and codes) are the input's; otherwise both are set to
            the reference affine with code 1 (scanner).

    Returns:
        A ``uint8`` (or ``uint16`` when labels exceed 255) :class:`nibabel.Nifti1Image`.

    Raises:
        GeometryError: shape mismatch, or the built image's affine differs from the reference's.
    """
    if tuple(mask.shape) != reference.shape:
        raise GeometryError(f"mask shape {tuple(mask.shape)} differs from image shape {reference.shape}")
    dtype = np.uint8 if mask.max(initial=0) <= 255 else np.uint16
    data = np.asarray(mask, dtype=dtype)
    if reference.nifti_header is not None:
        header = reference.nifti_header.copy()
        header.set_data_dtype(dtype)
        header.set_slope_inter(1.0, 0.0)
        header["cal_min"], header["cal_max"] = 0, 0
        if header["dim"][0] > 3:  # a squeezed 4D input with singleton trailing axes
            header.set_data_shape(data.shape)
        # affine=None: nibabel keeps the header's qform and sform fields verbatim
        # (quaternion, offsets, srow_*, codes), so they equal the input's bit for bit.
        img = nib.Nifti1Image(data, None, header=header)
    else:
        img = nib.Nifti1Image(data, reference.affine)
        img.header.set_qform(reference.affine, 1, strip_shears=False)
        img.header.set_sform(reference.affine, 1)
    img.header.set_data_dtype(dtype)
    if not np.allclose(img.header.get_best_affine(), reference.affine, atol=1e-4):
        raise GeometryError("written mask affine differs from the input affine")
    return img


def write_mask(mask: np.ndarray, reference: Image, path: str | Path) -> None:
    """Write ``mask`` as NIfTI on the reference grid, atomically (see :func:`mask_to_nifti`)."""
    img = mask_to_nifti(mask, reference)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_text(text: str, path: str | Path) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: object, path: str | Path) -> None:
    """Write JSON (indent 2) atomically."""
    write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)

