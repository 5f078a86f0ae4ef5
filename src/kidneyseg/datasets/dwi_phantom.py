"""Synthetic renal diffusion-weighted MRI phantoms with known kidney masks.

There is no public renal DWI with kidney masks on this machine (see issue 5), so the
diffusion path is tested end to end on phantoms whose answer is known. Signals are made
with dipy's simulation (:func:`dipy.sims.voxel.single_tensor`, Rician noise from
:func:`dipy.sims.voxel.add_noise`); the anatomy is a coarse abdomen in axial slices:

* body: an elliptic cylinder of isotropic soft tissue (D = 1.1e-3 mm^2/s), with a
  subcutaneous fat rim (low b=0 signal, D = 0.2e-3) and paraspinal muscle (anisotropic,
  principal direction head-feet, FA about 0.4), the kind of structure that makes an FA
  threshold alone fail;
* two kidneys, posterior and lateral, each an ellipsoid: an isotropic cortex shell
  (D = 2.0e-3, FA about 0), anisotropic medulla inside (eigenvalues 2.4/1.4/1.2e-3, FA
  about 0.35) whose principal direction points at the hilum, and low-signal sinus fat;
* air outside the body (signal 0 plus noise).

Values are typical of 1.5/3 T renal DTI reports (cortex more isotropic and diffusive than
medulla); the phantoms are for testing code paths with known answers, not for physics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..diffusion.tensor import DWI


@dataclass
class DWIPhantom:
    """One phantom: the DWI series and the ground-truth masks.

    Attributes:
        dwi: :class:`~kidneyseg.diffusion.tensor.DWI` (data ``(X, Y, Z, N)``, RAS+ affine).
        kidneys: ``(X, Y, Z)`` uint8, 1 right kidney, 2 left kidney (world side: larger x
            is the patient's right in RAS+, i.e. smaller array x here).
        medulla: ``(X, Y, Z)`` bool, the anisotropic compartment.
        spacing_mm: voxel size (x, y, z).
    """

    dwi: DWI
    kidneys: np.ndarray
    medulla: np.ndarray
    spacing_mm: tuple[float, float, float]


def gradient_scheme(n_directions: int = 12, b_value: float = 600.0, n_b0: int = 1,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_b0`` b=0 volumes and ``n_directions`` directions spread by electrostatic
    repulsion (dipy ``disperse_charges``); returns ``(bvals (N,), bvecs (N, 3))``."""
    from ..optional import require

    require("dipy", "DWI phantoms")
    from dipy.core.sphere import HemiSphere, disperse_charges

    rng = np.random.default_rng(seed)
    theta = np.pi * rng.random(n_directions)
    phi = 2 * np.pi * rng.random(n_directions)
    hemi, _ = disperse_charges(HemiSphere(theta=theta, phi=phi), 2000)
    bvecs = np.vstack([np.zeros((n_b0, 3)), hemi.vertices])
    bvals = np.concatenate([np.zeros(n_b0), np.full(n_directions, b_value)])
    return bvals, bvecs


def _orthonormal(principal: np.ndarray) -> np.ndarray:
    """3x3 matrix whose first column is ``principal`` (eigenvectors as columns, dipy's layout)."""
    e1 = principal / (np.linalg.norm(principal) + 1e-12)
    helper = np.array([0.0, 0.0, 1.0]) if abs(e1[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e2 = np.cross(e1, helper)
    e2 /= np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def make_dwi_phantom(seed: int = 0, shape: tuple[int, int, int] = (96, 80, 20),
                     spacing_mm: tuple[float, float, float] = (3.0, 3.0, 6.0), snr: float = 25.0,
                     n_directions: int = 12, b_value: float = 600.0) -> DWIPhantom:
    """Build one seeded phantom (see the module docstring for the anatomy).

    Args:
        seed: randomises body size, kidney size, position and tilt, and the noise.
        shape: array shape (x, y, z); axial slices along z.
        spacing_mm: voxel size; the affine is diagonal (RAS+ with x flipped, so array x
            runs from the patient's right to left as in most scanners' LPS storage).
        snr: b=0 signal-to-noise ratio of soft tissue (Rician noise).

    Returns:
        :class:`DWIPhantom`.
    """
    from ..optional import require

    require("dipy", "DWI phantoms")
    from dipy.core.gradients import gradient_table
    from dipy.sims.voxel import add_noise, single_tensor

    rng = np.random.default_rng(seed)
    bvals, bvecs = gradient_scheme(n_directions, b_value, seed=seed)
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=50.0)
    sx, sy, sz = spacing_mm
    X, Y, Z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    xm, ym, zm = X * sx, Y * sy, Z * sz  # mm from the corner
    cx, cy = shape[0] * sx / 2, shape[1] * sy / 2
    a_body = cx * rng.uniform(0.75, 0.88)
    b_body = cy * rng.uniform(0.65, 0.8)
    body_r = ((xm - cx) / a_body) ** 2 + ((ym - cy) / b_body) ** 2
    body = body_r <= 1.0
    fat = body & (body_r > 0.82)
    muscle = body & (((xm - cx) / 30.0) ** 2 + ((ym - (cy + 0.72 * b_body)) / 16.0) ** 2 <= 1.0)
    kidneys = np.zeros(shape, dtype=np.uint8)
    medulla = np.zeros(shape, dtype=bool)
    sinus = np.zeros(shape, dtype=bool)
    hilum_dirs = np.zeros(shape + (3,))
    zc = shape[2] * sz / 2 + rng.uniform(-5, 5)
    for label, side in ((1, -1.0), (2, 1.0)):  # array x small = patient right (x flipped)
        kx = cx + side * a_body * rng.uniform(0.45, 0.55)
        ky = cy + b_body * rng.uniform(0.2, 0.35)
        kz = zc + rng.uniform(-4, 4)
        half = np.array([rng.uniform(24, 30), rng.uniform(20, 26), rng.uniform(42, 54)])  # mm semi-axes (~110-170 mL)
        tilt = np.deg2rad(rng.uniform(-15, 15))
        dx, dy, dz = xm - kx, ym - ky, zm - kz
        u = np.cos(tilt) * dx - np.sin(tilt) * dy
        v = np.sin(tilt) * dx + np.cos(tilt) * dy
        r = (u / half[0]) ** 2 + (v / half[1]) ** 2 + (dz / half[2]) ** 2
        inside = (r <= 1.0) & body
        kidneys[inside] = label
        medulla |= inside & (r <= 0.55) & (r > 0.12)
        sinus |= inside & (r <= 0.12)
        vec = np.stack([-dx, -dy, -dz * 0.3], axis=-1)  # towards the hilum, mostly in-plane
        hilum_dirs[inside] = vec[inside]
    # tissue -> (S0, eigenvalues); the medulla's orientation varies per voxel
    data = np.zeros(shape + (len(bvals),), dtype=np.float64)
    tissues = [
        (body & ~fat & ~muscle, 1.0, (1.1e-3, 1.1e-3, 1.1e-3), np.eye(3)),
        (fat, 0.25, (0.2e-3, 0.2e-3, 0.2e-3), np.eye(3)),
        (muscle, 0.7, (2.0e-3, 1.0e-3, 0.9e-3), _orthonormal(np.array([0.0, 0.0, 1.0]))),
        ((kidneys > 0) & ~medulla & ~sinus, 1.3, (2.0e-3, 1.95e-3, 1.9e-3), np.eye(3)),
        (sinus, 0.3, (0.3e-3, 0.3e-3, 0.3e-3), np.eye(3)),
    ]
    for region, s0, evals, evecs in tissues:
        data[region] = single_tensor(gtab, S0=s0, evals=np.array(evals), evecs=evecs)
    for idx in zip(*np.nonzero(medulla)):
        data[idx] = single_tensor(gtab, S0=1.2, evals=np.array([2.4e-3, 1.4e-3, 1.2e-3]),
                                  evecs=_orthonormal(hilum_dirs[idx]))
    noisy = add_noise(data, snr, 1.0, noise_type="rician", rng=rng)
    affine = np.diag([-sx, sy, sz, 1.0])
    affine[:3, 3] = [shape[0] * sx / 2, -shape[1] * sy / 2, -shape[2] * sz / 2]
    dwi = DWI(noisy.astype(np.float32), affine, bvals, bvecs, None, None)
    return DWIPhantom(dwi=dwi, kidneys=kidneys, medulla=medulla, spacing_mm=tuple(float(s) for s in spacing_mm))


__all__ = ["DWIPhantom", "gradient_scheme", "make_dwi_phantom"]
