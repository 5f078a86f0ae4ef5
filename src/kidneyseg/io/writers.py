"""Writers. Every file is written atomically: to a hidden temporary file in the target
folder, then renamed over the target, so a crash never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
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


_LIVE: set[Path] = set()  # temporary files staged and not yet renamed or deleted, this process


def remove_staged_files() -> None:
    """Delete every temporary output file this process has staged and not yet published.

    Called by the CLI's SIGTERM handler before it unwinds: the handler may run between any
    two instructions, including inside :meth:`AtomicOutputs.__exit__`, so the cleanup cannot
    rely on the ``with`` block alone. Files already renamed onto their targets are kept.
    """
    for tmp in list(_LIVE):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _LIVE.discard(tmp)


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
        # The name is registered before the file is created and unregistered only after it
        # is renamed or deleted, so at every moment each temporary file on disk is known to
        # remove_staged_files(), whichever instruction a signal handler interrupts.
        with signals_deferred():
            while True:
                tmp = target.parent / f".{target.stem}.{secrets.token_hex(6)}.tmp{suffix}"
                self._staged.append((tmp, target))
                _LIVE.add(tmp)
                try:
                    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies, as for any file
                    break
                except FileExistsError:
                    self._staged.pop()
                    _LIVE.discard(tmp)
        return tmp

    def commit(self) -> None:
        """Rename every staged file onto its target."""
        with signals_deferred():
            while self._staged:
                tmp, target = self._staged[0]
                os.replace(tmp, target)
                _LIVE.discard(tmp)
                self._staged.pop(0)

    def abort(self) -> None:
        """Delete every staged temporary file."""
        with signals_deferred():
            while self._staged:
                tmp, _ = self._staged[0]
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                _LIVE.discard(tmp)
                self._staged.pop(0)

    def __enter__(self) -> "AtomicOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.abort()  # nothing left to delete after a complete commit


STAGED_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp[^/]*$")
"""Names :class:`AtomicOutputs` stages files under (``.<stem>.<12 hex>.tmp<suffix>``)."""


def remove_stale_staged(folder: str | Path) -> list[Path]:
    """Delete the staged files a killed run (SIGKILL, power loss) left in ``folder``.

    Call it only while holding the folder's lock (:func:`kidneyseg.cohort.output_lock`), so no
    other run's staged files can be in it. Only top-level files named as
    :class:`AtomicOutputs` names them are touched.

    Returns:
        The files removed.
    """
    removed = []
    for p in Path(folder).iterdir():
        if STAGED_NAME.match(p.name) and p.is_file() and p not in _LIVE:
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


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
    return _on_reference_grid(np.asarray(mask, dtype=dtype), reference)


def probability_to_nifti(probability: np.ndarray, reference: Image) -> nib.Nifti1Image:
    """A float32 NIfTI of a probability map (values in [0, 1]) on exactly the reference's grid,
    with the header handling of :func:`mask_to_nifti`.

    Raises:
        GeometryError: shape mismatch, or the built image's affine differs from the reference's.
    """
    if tuple(probability.shape) != reference.shape:
        raise GeometryError(f"probability shape {tuple(probability.shape)} differs from image shape {reference.shape}")
    return _on_reference_grid(np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0), reference)


def _on_reference_grid(data: np.ndarray, reference: Image) -> nib.Nifti1Image:
    dtype = data.dtype
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

