"""Diffusion tensor maps from diffusion-weighted MRI (seed 000, section II.A).

The tensor is fitted by dipy (:class:`dipy.reconst.dti.TensorModel`, weighted least squares
by default); this module checks the inputs, builds the gradient table from FSL-style
``bval``/``bvec`` files, optionally masks the body, and writes the maps on the DWI's grid.

Units: with b-values in s/mm^2 (the FSL and DICOM convention) diffusivities (MD, AD, RD and
the tensor elements) are in mm^2/s; FA is dimensionless in [0, 1].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from ..io import Image

log = logging.getLogger(__name__)

#: Order of the six unique tensor elements, as dipy's ``lower_triangular`` returns them.
TENSOR_ELEMENTS = ("Dxx", "Dxy", "Dyy", "Dxz", "Dyz", "Dzz")
#: A mask voxel whose mean diffusion-weighted signal is at least its b=0 signal has a
#: non-positive apparent diffusivity. Above this fraction of the mask the b-values, the b=0
#: volume or the volume order are wrong, and fitting is refused.
MAX_NONPOSITIVE_FRACTION = 0.5


@dataclass
class DWI:
    """A diffusion-weighted series and its gradient scheme.

    Attributes:
        data: ``(X, Y, Z, N)`` float32 signal, array axes as stored in the file.
        affine: ``(4, 4)`` voxel-to-RAS+ mm matrix of the first three axes.
        bvals: ``(N,)`` b-values, s/mm^2.
        bvecs: ``(N, 3)`` unit gradient directions (FSL convention: image axes).
        source: the DWI file.
        header: the NIfTI header (copied to every written map).
    """

    data: np.ndarray
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    source: Path | None = None
    header: object = field(default=None, repr=False)

    def volume(self) -> Image:
        """The b=0 (first) volume as a 3D :class:`~kidneyseg.io.Image` (grid reference)."""
        return Image(np.asarray(self.data[..., 0], dtype=np.float32), self.affine, self.source,
                     nifti_header=self.header, modality="MR")


@dataclass
class TensorMaps:
    """Scalar maps of a fitted diffusion tensor, all on the DWI's 3D grid.

    Attributes:
        fa: fractional anisotropy, ``(X, Y, Z)`` float32 in [0, 1].
        md: mean diffusivity (trace / 3), mm^2/s.
        ad: axial diffusivity (largest eigenvalue), mm^2/s.
        rd: radial diffusivity (mean of the two smaller eigenvalues), mm^2/s.
        tensor: ``(X, Y, Z, 6)`` elements in :data:`TENSOR_ELEMENTS` order, mm^2/s.
        mask: ``(X, Y, Z)`` bool, the voxels that were fitted (outside, every map is 0).
        nonpositive_voxels: mask voxels whose mean diffusion-weighted signal is not below
            their b=0 signal (apparent diffusivity <= 0; dipy clips their eigenvalues).
    """

    fa: np.ndarray
    md: np.ndarray
    ad: np.ndarray
    rd: np.ndarray
    tensor: np.ndarray
    mask: np.ndarray
    nonpositive_voxels: int = 0

    def scalar_maps(self) -> dict[str, np.ndarray]:
        """``{"fa": ..., "md": ..., "ad": ..., "rd": ...}``."""
        return {"fa": self.fa, "md": self.md, "ad": self.ad, "rd": self.rd}


def read_dwi(dwi_path: str | Path, bval_path: str | Path, bvec_path: str | Path) -> DWI:
    """Read a 4D NIfTI DWI series and its FSL ``bval``/``bvec`` text files.

    Args:
        dwi_path: 4D NIfTI (.nii or .nii.gz), one volume per gradient.
        bval_path: one row of N b-values (s/mm^2).
        bvec_path: three rows (or N rows of three) of gradient directions.

    Raises:
        InputError: unreadable file, DWI not 4D, bval/bvec count not matching the number of
            DWI volumes, no b=0 volume (b <= 50 s/mm^2), or a zero-length gradient on a
            diffusion-weighted volume.
    """
    from ..optional import require

    require("dipy", "diffusion tensor fitting")
    from dipy.io.gradients import read_bvals_bvecs

    dwi_path = Path(dwi_path)
    try:
        img = nib.load(str(dwi_path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputError(f"{dwi_path}: cannot read as NIfTI ({exc})") from None
    if data.ndim != 4:
        raise InputError(f"{dwi_path}: expected a 4D diffusion-weighted series, got shape {data.shape}")
    try:
        bvals, bvecs = read_bvals_bvecs(str(bval_path), str(bvec_path))
    except Exception as exc:
        raise InputError(f"{bval_path} / {bvec_path}: cannot read the gradient files ({exc})") from None
    n = data.shape[3]
    if bvals.shape[0] != n:
        raise InputError(f"{bval_path}: {bvals.shape[0]} b-values for {n} DWI volumes in {dwi_path.name}")
    if bvecs.shape[0] != n:
        raise InputError(f"{bvec_path}: {bvecs.shape[0]} gradient directions for {n} DWI volumes in {dwi_path.name}")
    return check_gradients(DWI(data, img.affine, bvals.astype(np.float64), bvecs.astype(np.float64),
                               dwi_path, img.header), str(bval_path))


def check_gradients(dwi: DWI, where: str = "bval", b0_threshold: float = 50.0) -> DWI:
    """Validate the gradient scheme of ``dwi`` (see :func:`read_dwi` for the errors)."""
    b0 = dwi.bvals <= b0_threshold
    if not b0.any():
        raise InputError(f"{where}: no b=0 volume (every b-value is above {b0_threshold:g} s/mm^2); "
                         "the tensor needs an unweighted reference")
    if b0.all():
        raise InputError(f"{where}: every volume has b <= {b0_threshold:g} s/mm^2; no diffusion weighting")
    norms = np.linalg.norm(dwi.bvecs[~b0], axis=1)
    if np.any(norms < 1e-6):
        raise InputError(f"{where}: a diffusion-weighted volume has a zero gradient direction")
    if (~b0).sum() < 6:
        raise InputError(f"{where}: {(~b0).sum()} diffusion-weighted volumes; a tensor needs at least 6 directions")
    return dwi


def fit_tensor(dwi: DWI, mask: np.ndarray | str | None = "auto", fit_method: str = "WLS") -> TensorMaps:
    """Fit the diffusion tensor in every voxel of ``mask`` (dipy).

    Args:
        dwi: from :func:`read_dwi`.
        mask: ``"auto"`` for dipy's ``median_otsu`` body mask on the mean b=0 volume,
            ``None`` for every voxel, or a ``(X, Y, Z)`` bool array.
        fit_method: dipy ``TensorModel`` fit method (``"WLS"``, ``"OLS"``, ``"NLLS"``, ``"RT"``).

    Returns:
        :class:`TensorMaps`; diffusivities in mm^2/s when b is in s/mm^2.

    Raises:
        InputError: mask of the wrong shape or empty; more than
            :data:`MAX_NONPOSITIVE_FRACTION` of the mask with non-positive apparent
            diffusivity (wrong b-values, b=0 volume or volume order).
    """
    from ..optional import require

    require("dipy", "diffusion tensor fitting")
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    where = dwi.source.name if dwi.source else "DWI"
    b0 = dwi.bvals <= 50.0
    s0 = dwi.data[..., b0].mean(axis=-1)
    if isinstance(mask, str) and mask == "auto":
        from dipy.segment.mask import median_otsu

        _, mask = median_otsu(s0, median_radius=2, numpass=1)
    elif mask is None:
        mask = np.ones(s0.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != s0.shape:
        raise InputError(f"{where}: mask shape {mask.shape} differs from the DWI grid {s0.shape}")
    if not mask.any():
        raise InputError(f"{where}: the body mask is empty; nothing to fit")
    mean_dw = dwi.data[..., ~b0].mean(axis=-1)
    nonpositive = mask & (mean_dw >= s0)
    fraction = nonpositive.sum() / mask.sum()
    if fraction > MAX_NONPOSITIVE_FRACTION:
        raise InputError(f"{where}: {100 * fraction:.0f}% of body voxels have non-positive apparent diffusivity "
                         "(diffusion-weighted signal >= b=0 signal); check the b-values, the b=0 volume and "
                         "the volume order")
    if nonpositive.any():
        log.warning("%s: %d body voxels have non-positive apparent diffusivity; dipy clips their eigenvalues",
                    where, int(nonpositive.sum()))
    gtab = gradient_table(dwi.bvals, bvecs=dwi.bvecs, b0_threshold=50.0)
    fit = TensorModel(gtab, fit_method=fit_method).fit(dwi.data, mask=mask)

    def clean(a: np.ndarray) -> np.ndarray:
        a = np.nan_to_num(np.asarray(a, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        a[~mask] = 0.0
        return a

    return TensorMaps(fa=np.clip(clean(fit.fa), 0.0, 1.0), md=clean(fit.md), ad=clean(fit.ad), rd=clean(fit.rd),
                      tensor=clean(fit.lower_triangular()), mask=mask, nonpositive_voxels=int(nonpositive.sum()))


def write_tensor_maps(maps: TensorMaps, dwi: DWI, out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``fa``, ``md``, ``ad``, ``rd`` (3D), ``tensor`` (4D, 6 elements) and ``mask``
    as NIfTI on the DWI's grid (same affine, qform and sform), plus ``dti.json`` (units,
    element order, counts), all-or-nothing.

    Returns:
        name -> written path.

    Raises:
        InputError: an output exists and ``overwrite`` is false.
    """
    import json

    from ..io.writers import AtomicOutputs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {**maps.scalar_maps(), "tensor": maps.tensor, "mask": maps.mask.astype(np.uint8)}
    paths = {name: out / f"{name}.nii.gz" for name in arrays}
    paths["summary"] = out / "dti.json"
    with AtomicOutputs(overwrite=overwrite) as outs:
        for name, arr in arrays.items():
            header = dwi.header.copy() if dwi.header is not None else None
            img = nib.Nifti1Image(arr, dwi.affine if header is None else None, header=header)
            if header is not None:
                img.header.set_data_shape(arr.shape)
                img.header.set_data_dtype(arr.dtype)
                img.header.set_slope_inter(1.0, 0.0)
                img.header["cal_min"], img.header["cal_max"] = 0, 0
                if arr.ndim == 4:
                    img.header.set_intent("symmetric matrix", name="DTI lower triangular")
            nib.save(img, str(outs.stage(paths[name])))
        summary = {
            "source": str(dwi.source) if dwi.source else None,
            "units": {"fa": "1", "md": "mm^2/s", "ad": "mm^2/s", "rd": "mm^2/s", "tensor": "mm^2/s"},
            "tensor_elements": list(TENSOR_ELEMENTS),
            "b_values_s_per_mm2": sorted({round(float(b)) for b in dwi.bvals}),
            "mask_voxels": int(maps.mask.sum()),
            "nonpositive_diffusivity_voxels": maps.nonpositive_voxels,
            "method": "dipy TensorModel",
        }
        outs.stage(paths["summary"]).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return paths


__all__ = ["DWI", "TENSOR_ELEMENTS", "TensorMaps", "check_gradients", "fit_tensor", "read_dwi", "write_tensor_maps"]
