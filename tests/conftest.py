"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CHAOS = SHARED_DATA / "chaos_t2"
UKAT = SHARED_DATA / "ukat_kidney_masks"
KITS19 = SHARED_DATA / "kits_masks" / "kits19"

needs_chaos = pytest.mark.skipif(not CHAOS.is_dir(), reason="../shared/data/chaos_t2 not present")
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ellipsoid(shape, spacing, centre_mm, radii_mm) -> np.ndarray:
    """Boolean ellipsoid on a grid with the given spacing (voxel centres at index*spacing)."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    r = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre_mm, radii_mm))
    return r <= 1.0


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.fixture
def two_kidney_phantom():
    """(image, labels, affine): an RAS volume at (1.5, 1.5, 6) mm with two ellipsoidal
    'kidneys'; label 1 at larger world x (patient's right), label 2 at smaller x."""
    spacing = (1.5, 1.5, 6.0)
    shape = (96, 64, 20)
    right = ellipsoid(shape, spacing, (100, 48, 60), (18, 12, 40))
    left = ellipsoid(shape, spacing, (40, 48, 60), (18, 12, 40))
    labels = np.zeros(shape, np.uint8)
    labels[right] = 1
    labels[left] = 2
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = (-72.0, -48.0, -60.0)
    rng = np.random.default_rng(0)
    image = (100 + 50 * (labels > 0) + rng.normal(0, 5, shape)).astype(np.float32)
    return image, labels, affine
