"""Synthetic contrast-enhanced abdominal CT phantoms with kidney, tumour and cyst labels.

No real CT with masks is on this machine (issue 6), so the CT pipelines are proven on
phantoms whose answer is known. Values are typical Hounsfield units of a corticomedullary /
nephrographic phase scan; shapes are coarse anatomy, made in world (RAS+, mm) coordinates
and then stored in the orientation asked for:

* air -1000 outside an elliptic body; subcutaneous fat (-100) rim; soft tissue / muscle 40;
  retroperitoneal fat -90 around the kidneys; liver 60 on the right; a vertebral body
  (cancellous 250, cortical 700) and the aorta (contrast, 180) in the midline;
* kidneys (label 1): ellipsoids of 100-190 mL, tilted, posterior and lateral to the spine;
  enhancing cortex 150 (a 5-7 mm shell), medulla 100, sinus fat -80 at the hilum;
* tumours (label 2): spheres of 8-40 mm diameter, 60-90 HU, centred on or near the kidney
  surface (exophytic) or inside it; cysts (label 3): 5-30 mm, 0-20 HU;
* Gaussian noise (sigma 10-20 HU), a random slight intensity offset per scan.

Labels follow KiTS (1 kidney, 2 tumour, 3 cyst); tumour and cyst voxels are labelled as
such wherever they lie, and the masses that leave the kidney stay connected to it.
``n_kidneys`` 1 or 3 gives the abnormal cases of the coarse-to-fine cascade (seed 004: a
single kidney, or an extra component such as a pelvic kidney).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labels import KITS

HU = {"air": -1000.0, "fat": -100.0, "retro_fat": -90.0, "soft": 40.0, "liver": 60.0, "bone": 250.0,
      "cortical_bone": 700.0, "aorta": 180.0, "cortex": 150.0, "medulla": 100.0, "sinus": -80.0}


@dataclass
class CTPhantom:
    """One phantom.

    Attributes:
        image: int16 HU, in the file axis order of ``affine`` (e.g. (z, y, x) for ``"IPL"``).
        labels: uint8 of the same shape, :data:`kidneyseg.labels.KITS` values.
        affine: 4 x 4 voxel -> world (RAS+, mm).
        spacing_mm: voxel size along the file axes.
        kidney_centres_mm: world centre of each kidney (RAS+).
        n_tumours, n_cysts: lesions placed.
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    kidney_centres_mm: list[tuple[float, float, float]]
    n_tumours: int
    n_cysts: int

    label_map = KITS


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid_r(points: np.ndarray, centre, semi_axes, rotation: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) of world points ``(..., 3)``."""
    local = (points - np.asarray(centre, np.float32)) @ rotation.astype(np.float32)
    return np.sqrt(((local / np.asarray(semi_axes, np.float32)) ** 2).sum(-1))


def make_ct_phantom(seed: int = 0, spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0),
                    fov_mm: tuple[float, float, float] = (300.0, 220.0, 210.0), n_kidneys: int = 2,
                    n_tumours: int | None = None, n_cysts: int | None = None,
                    orientation: str = "RAS") -> CTPhantom:
    """Make one phantom (see the module docstring).

    Args:
        seed: every random choice (sizes, positions, lesions, noise) comes from it.
        spacing_mm: voxel size along R, A, S (before reorientation).
        fov_mm: field of view along R, A, S.
        n_kidneys: 1, 2 or 3 (the third is a pelvic kidney below the others).
        n_tumours, n_cysts: lesions over all kidneys; default random (tumours 0-2, cysts 0-2,
            at least one lesion).
        orientation: axis codes of the stored arrays, e.g. ``"RAS"`` or ``"IPL"`` (KiTS19:
            axes (z, y, x)); any permutation of R/L, A/P, S/I.

    Returns:
        a :class:`CTPhantom`.
    """
    if n_kidneys not in (1, 2, 3):
        raise ValueError(f"n_kidneys: expected 1, 2 or 3, got {n_kidneys}")
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing_mm, float)
    shape = tuple(int(round(f / s)) for f, s in zip(fov_mm, sp))
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, sp)]
    pts = np.stack(np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij"), axis=-1)
    x, y = pts[..., 0], pts[..., 1]
    img = np.full(shape, HU["air"], np.float32)
    lab = np.zeros(shape, np.uint8)

    # body: elliptic cylinder with a fat rim
    bx, by = fov_mm[0] * rng.uniform(0.40, 0.46), fov_mm[1] * rng.uniform(0.38, 0.44)
    body_r = np.sqrt((x / bx) ** 2 + (y / by) ** 2)
    img[body_r < 1] = HU["fat"]
    img[body_r < 1 - 15 / bx] = HU["soft"]
    # retroperitoneal fat, spine, aorta, liver
    img[np.sqrt(((x) / (bx * 0.75)) ** 2 + ((y + by * 0.35) / (by * 0.4)) ** 2) < 1] = HU["retro_fat"]
    spine_c = (0.0, -by * 0.45)
    d_spine = np.sqrt((x - spine_c[0]) ** 2 + (y - spine_c[1]) ** 2)
    img[d_spine < 20] = HU["cortical_bone"]
    img[d_spine < 17] = HU["bone"]
    img[np.sqrt((x + 5) ** 2 + (y - (spine_c[1] + 32)) ** 2) < 11] = HU["aorta"]  # left of midline
    liver = _ellipsoid_r(pts, (bx * 0.45, 0.0, fov_mm[2] * 0.25), (bx * 0.45, by * 0.6, 90.0), np.eye(3))
    img[liver < 1] = HU["liver"]

    # kidneys, posterior, either side of the spine (RAS+: +x is the patient's right)
    centres = []
    sides = [-1.0, 1.0][:max(n_kidneys, 1)] if n_kidneys >= 2 else [rng.choice([-1.0, 1.0])]
    z_top = rng.uniform(-10, 20)
    for side in sides:
        centres.append((side * rng.uniform(65, 80), spine_c[1] + rng.uniform(5, 20), z_top + rng.uniform(-15, 15)))
    if n_kidneys == 3:
        centres.append((rng.uniform(-20, 20), spine_c[1] + 45, z_top - 85))
    kidney_masks = []
    for i, c in enumerate(centres):
        semi = np.array([rng.uniform(24, 30), rng.uniform(20, 26), rng.uniform(48, 58)])
        if i == 2:
            semi = semi * 0.8
        rot = _rotation(rng, 15)
        r = _ellipsoid_r(pts, c, semi, rot)
        kidney = r < 1
        # cortex shell, medulla inside; sinus fat: the medial third of the core
        cortex_frac = 1 - rng.uniform(5, 7) / semi.min()
        medial = np.sign(-c[0]) if abs(c[0]) > 1 else 1.0
        local_x = ((pts - np.asarray(c, np.float32)) @ rot.astype(np.float32))[..., 0] * medial
        img[kidney] = HU["cortex"]
        img[kidney & (r < cortex_frac)] = HU["medulla"]
        img[kidney & (r < cortex_frac * 0.75) & (local_x > semi[0] * 0.25)] = HU["sinus"]
        lab[kidney] = 1
        kidney_masks.append((c, semi, rot))

    # lesions
    if n_tumours is None and n_cysts is None:
        n_tumours, n_cysts = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        if n_tumours + n_cysts == 0:
            n_tumours = 1
    n_tumours, n_cysts = int(n_tumours or 0), int(n_cysts or 0)
    for kind, count in (("tumor", n_tumours), ("cyst", n_cysts)):
        for _ in range(count):
            c, semi, rot = kidney_masks[int(rng.integers(len(kidney_masks)))]
            radius = rng.uniform(4, 20) if kind == "tumor" else rng.uniform(2.5, 15)
            # a point at 0.3-1.0 of the kidney radius: inside, or straddling the surface (exophytic)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            depth = rng.uniform(0.3, 1.0)
            centre = np.asarray(c) + rot @ (direction * semi * depth)
            ball = np.linalg.norm(pts - centre.astype(np.float32), axis=-1) < radius
            value = rng.uniform(60, 90) if kind == "tumor" else rng.uniform(0, 20)
            img[ball] = value
            lab[ball] = 2 if kind == "tumor" else 3
    img += rng.normal(0, rng.uniform(10, 20), shape).astype(np.float32) + rng.uniform(-10, 10)
    img[body_r >= 1] = HU["air"] + rng.normal(0, 5, int((body_r >= 1).sum()))

    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp)
    affine[:3, 3] = [a[0] for a in axes]
    image, labels, affine = _reorient(np.round(img).astype(np.int16), lab, affine, orientation)
    spacing = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(0)))
    return CTPhantom(image, labels, affine, spacing, [tuple(map(float, c)) for c in centres], n_tumours, n_cysts)


def _reorient(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, codes: str):
    import nibabel as nib

    start = nib.orientations.axcodes2ornt(("R", "A", "S"))
    end = nib.orientations.axcodes2ornt(tuple(codes))
    t = nib.orientations.ornt_transform(start, end)
    img = nib.orientations.apply_orientation(image, t)
    lab = nib.orientations.apply_orientation(labels, t)
    new_affine = affine @ nib.orientations.inv_ornt_aff(t, image.shape)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab), new_affine


def write_kits_phantoms(folder, seeds, orientations: tuple[str, ...] = ("IPL", "RAS", "LPS"),
                        spacings: tuple[tuple[float, float, float], ...] = ((1.5, 1.5, 3.0), (1.2, 1.2, 2.0), (1.8, 1.8, 4.0)),
                        **kwargs):
    """Write phantoms as a KiTS folder (``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``).

    Orientation and spacing cycle through ``orientations`` and ``spacings`` (varied geometry,
    as the issue asks); other keyword arguments go to :func:`make_ct_phantom`.

    Returns:
        the folder (a :class:`pathlib.Path`).
    """
    from pathlib import Path

    import nibabel as nib

    root = Path(folder)
    for i, seed in enumerate(seeds):
        ph = make_ct_phantom(int(seed), spacing_mm=spacings[i % len(spacings)],
                             orientation=orientations[i % len(orientations)], **kwargs)
        d = root / f"case_{int(seed):05d}"
        d.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(ph.image, ph.affine), str(d / "imaging.nii.gz"))
        nib.save(nib.Nifti1Image(ph.labels, ph.affine), str(d / "segmentation.nii.gz"))
    return root
