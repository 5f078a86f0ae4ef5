"""Metrics: hand-computed values, empty-mask rules, agreement with DeepMind's
surface-distance, KiTS regions on real masks, 2D metrics on real ultrasound masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from kidneyseg.io import read_image
from kidneyseg.metrics import (
    KITS_REGIONS,
    Confusion,
    Region,
    assd_mm,
    average_surface_distances_mm,
    dice,
    evaluate_labels,
    hausdorff95_mm,
    hausdorff_mm,
    robust_hausdorff_mm,
    summarise,
    surface_dice,
    surface_distances,
)

from ..conftest import SHARED_DATA, ellipsoid

KITS23 = SHARED_DATA / "kits_masks" / "kits23"
KITS19 = SHARED_DATA / "kits_masks" / "kits19"
KIDNEYUS = SHARED_DATA / "kidneyus_labels"
needs_kits = pytest.mark.skipif(not KITS23.is_dir(), reason="../shared/data/kits_masks not present")
needs_kidneyus = pytest.mark.skipif(not KIDNEYUS.is_dir(), reason="../shared/data/kidneyus_labels not present")

sdl = pytest.importorskip("surface_distance")


def reference_figures(pred, ref, spacing, tolerance):
    """The same figures from DeepMind's surface-distance (argument order: gt, pred)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        d = sdl.compute_surface_distances(ref, pred, spacing)
    asd_r2p, asd_p2r = sdl.compute_average_surface_distance(d)
    return {"hd95": sdl.compute_robust_hausdorff(d, 95), "hd": sdl.compute_robust_hausdorff(d, 100),
            "asd_p2r": asd_p2r, "asd_r2p": asd_r2p, "sdice": sdl.compute_surface_dice_at_tolerance(d, tolerance)}


def our_figures(pred, ref, spacing, tolerance):
    sd = surface_distances(pred, ref, spacing)
    asd_p2r, asd_r2p = average_surface_distances_mm(sd)
    return {"hd95": hausdorff95_mm(sd), "hd": hausdorff_mm(sd), "asd_p2r": asd_p2r, "asd_r2p": asd_r2p,
            "sdice": surface_dice(sd, tolerance)}


def assert_same(ours, theirs, rel=1e-6):
    for k in theirs:
        assert ours[k] == pytest.approx(float(theirs[k]), rel=rel, abs=1e-9), k


# ---------------------------------------------------------------- hand-computed cases

def test_two_pixels_two_mm_apart():
    # spacing (2, 1): pixel centres (0, 0) and (1, 0) are 2 mm apart along axis 0.
    pred = np.zeros((4, 4), bool)
    ref = np.zeros((4, 4), bool)
    pred[1, 1] = True
    ref[2, 1] = True
    sd = surface_distances(pred, ref, (2.0, 1.0))
    # each pixel has 4 corner points; the two shared corners are at 0 mm, the others 2 mm
    assert sorted(sd.pred_to_ref_mm) == [0.0, 0.0, 2.0, 2.0]
    assert hausdorff_mm(sd) == 2.0
    assert hausdorff95_mm(sd) == 2.0
    assert assd_mm(sd) == 1.0
    assert surface_dice(sd, 1.0) == 0.5
    assert surface_dice(sd, 2.0) == 1.0
    # each corner carries the contour length of half a diagonal: 0.5 * sqrt(2^2 + 1^2)
    assert sd.areas_pred == pytest.approx([0.5 * math.sqrt(5.0)] * 4)
    assert dice(pred, ref) == 0.0


def test_sphere_against_shifted_sphere_anisotropic():
    spacing = (0.8, 0.8, 2.5)
    shape = (64, 64, 30)
    ref = ellipsoid(shape, spacing, (25.6, 25.6, 37.5), (12.0, 12.0, 12.0))
    pred = np.roll(ref, 2, axis=2)  # an exact translate by 2 slices = 5.0 mm
    sd = surface_distances(pred, ref, spacing)
    # every surface point of one sphere maps onto the other by the 5 mm shift, so no
    # distance exceeds 5 mm, and the poles are exactly 5 mm from the other surface
    assert hausdorff_mm(sd) == pytest.approx(5.0)
    assert 0.0 < assd_mm(sd) < 5.0
    assert surface_dice(sd, 5.0) == 1.0
    assert surface_dice(sd, 2.4) < 1.0
    assert hausdorff95_mm(sd) <= 5.0 + 1e-9
    assert_same(our_figures(pred, ref, spacing, 2.0), reference_figures(pred, ref, spacing, 2.0))
    # the true shift in mm is recovered only with the right spacing: isotropic 1 mm gives 2
    assert hausdorff_mm(surface_distances(pred, ref, (1.0, 1.0, 1.0))) == pytest.approx(2.0)


def test_overlap_counts_by_hand():
    ref = np.zeros((10, 10), bool)
    ref[:2, :4] = True  # 8 voxels
    pred = np.zeros((10, 10), bool)
    pred[:2, :5] = True  # 10 voxels, 8 of them shared
    c = Confusion.from_masks(pred, ref)
    assert (c.tp, c.fp, c.fn, c.tn) == (8, 2, 0, 90)
    assert c.dice == pytest.approx(16 / 18)
    assert c.jaccard == pytest.approx(8 / 10)
    assert c.precision == pytest.approx(0.8)
    assert c.recall == 1.0
    assert c.specificity == pytest.approx(90 / 92)
    assert c.accuracy == pytest.approx(0.98)
    assert c.f1 == pytest.approx(c.dice)
    assert c.volume_difference == pytest.approx(0.25)
    assert c.pkvd == pytest.approx(25.0)


# ---------------------------------------------------------------- empty masks

@pytest.mark.parametrize("ndim", [2, 3])
def test_empty_rules(ndim):
    shape = (6,) * ndim
    empty = np.zeros(shape, bool)
    full = np.ones(shape, bool)
    spacing = (1.0,) * ndim
    both = surface_distances(empty, empty, spacing)
    assert hausdorff_mm(both) == 0.0 and hausdorff95_mm(both) == 0.0 and assd_mm(both) == 0.0
    assert surface_dice(both, 1.0) == 1.0
    c = Confusion.from_masks(empty, empty)
    assert (c.dice, c.jaccard, c.precision, c.recall, c.f1, c.volume_difference) == (1.0, 1.0, 1.0, 1.0, 1.0, 0.0)
    for pred, ref in ((empty, full), (full, empty)):
        sd = surface_distances(pred, ref, spacing)
        assert hausdorff_mm(sd) == math.inf and hausdorff95_mm(sd) == math.inf and assd_mm(sd) == math.inf
        assert average_surface_distances_mm(sd) == (math.inf, math.inf)
        assert surface_dice(sd, 10.0) == 0.0
        c = Confusion.from_masks(pred, ref)
        assert c.dice == 0.0 and c.jaccard == 0.0 and c.precision == 0.0 and c.recall == 0.0 and c.f1 == 0.0
    assert Confusion.from_masks(empty, full).volume_difference == 1.0
    assert Confusion.from_masks(full, empty).volume_difference == math.inf
    assert Confusion.from_masks(full, full).specificity == 1.0  # no negatives at all


def test_what_the_libraries_get_wrong_on_a_missed_kidney():
    """MONAI's HD95 gives NaN for a missed structure and its Dice NaN for two empty
    masks (so they drop out of means); surface-distance crashes on NumPy 2 (np.Inf) and
    gives a NaN Dice for two empty masks. Ours: inf and 1.0, explicitly."""
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_dice, compute_hausdorff_distance

    ref = np.zeros((12, 12, 12), bool)
    ref[3:7, 3:7, 3:7] = True
    miss = np.zeros_like(ref)
    t = lambda a: torch.from_numpy(a[None, None].astype(np.float32))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd95 = float(compute_hausdorff_distance(t(miss), t(ref), percentile=95))
        monai_dice_empty = float(compute_dice(t(miss), t(miss)))
    assert math.isnan(monai_hd95)
    assert math.isnan(monai_dice_empty)
    if hasattr(np, "Inf"):  # NumPy 1: NaN Dice for two empty masks
        assert math.isnan(sdl.compute_dice_coefficient(miss, miss))
    else:  # NumPy 2: np.NaN / np.Inf are gone and the library raises
        with pytest.raises(AttributeError):
            sdl.compute_dice_coefficient(miss, miss)
        with pytest.raises(AttributeError):
            sdl.compute_robust_hausdorff(sdl.compute_surface_distances(ref, miss, (1.0, 1.0, 1.0)), 95)
    assert hausdorff95_mm(surface_distances(miss, ref, (1.0, 1.0, 1.0))) == math.inf
    assert dice(miss, miss) == 1.0


# ---------------------------------------------------------------- agreement with surface-distance

def _blobs(rng, shape, sigma, level):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > level * field.std()


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_surface_distance_random_3d(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(12, 40, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, size=3))
    pred = _blobs(rng, shape, 2.5, 0.5)
    ref = _blobs(rng, shape, 2.5, 0.5) | pred & (rng.random(shape) < 0.5)
    if not pred.any() or not ref.any():
        pytest.skip("degenerate random draw")
    tol = float(rng.uniform(0.5, 4.0))
    assert_same(our_figures(pred, ref, spacing, tol), reference_figures(pred, ref, spacing, tol))


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_surface_distance_random_2d(seed):
    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(s) for s in rng.integers(20, 120, size=2))
    spacing = tuple(float(s) for s in rng.uniform(0.2, 2.0, size=2))
    pred = _blobs(rng, shape, 3.0, 0.3)
    ref = _blobs(rng, shape, 3.0, 0.3)
    if not pred.any() or not ref.any():
        pytest.skip("degenerate random draw")
    assert_same(our_figures(pred, ref, spacing, 1.5), reference_figures(pred, ref, spacing, 1.5))


@needs_kits
@pytest.mark.parametrize("case", ["case_00004", "case_00006"])
def test_agrees_with_surface_distance_on_real_kits(case):
    """KiTS19 vs KiTS23 annotation of the same patient: a real disagreement."""
    pred = read_image(KITS19 / case / "segmentation.nii.gz")
    ref = read_image(KITS23 / case / "segmentation.nii.gz")
    for region in KITS_REGIONS:
        p, r = np.isin(pred.array, region.labels), np.isin(ref.array, region.labels)
        assert_same(our_figures(p, r, pred.spacing_mm, region.tolerance_mm),
                    reference_figures(p, r, pred.spacing_mm, region.tolerance_mm))


# ---------------------------------------------------------------- regions and summaries

@needs_kits
def test_kits_regions_on_real_kits23_masks():
    img = read_image(KITS23 / "case_00002" / "segmentation.nii.gz")  # kidney, tumour and cyst
    counts = np.bincount(img.array.ravel(), minlength=4)
    assert counts[3] > 0
    rows = {r["region"]: r for r in evaluate_labels(img.array, img.array, img.spacing_mm, KITS_REGIONS,
                                                     voxel_volume_ml=img.voxel_volume_ml)}
    assert rows["kidney_and_masses"]["voxels_ref"] == counts[1] + counts[2] + counts[3]
    assert rows["masses"]["voxels_ref"] == counts[2] + counts[3]
    assert rows["tumor"]["voxels_ref"] == counts[2]
    assert [rows[r.name]["tolerance_mm"] for r in KITS_REGIONS] == [1.0331, 1.1329, 1.1498]
    for r in rows.values():
        assert r["dice"] == 1.0 and r["hd95_mm"] == 0.0 and r["surface_dice"] == 1.0
    assert rows["tumor"]["volume_ref_ml"] == pytest.approx(counts[2] * img.voxel_volume_ml)
    # against KiTS19's annotation (no cysts there), masses differ by the cysts
    old = read_image(KITS19 / "case_00002" / "segmentation.nii.gz")
    rows = {r["region"]: r for r in evaluate_labels(old.array, img.array, img.spacing_mm, KITS_REGIONS)}
    assert rows["masses"]["voxels_pred"] == np.count_nonzero(old.array == 2)
    assert rows["masses"]["recall"] < rows["tumor"]["recall"] + 1e-12


def test_per_label_rows_crop_and_true_negatives():
    lab_p = np.zeros((30, 30, 10), np.uint8)
    lab_r = np.zeros_like(lab_p)
    lab_p[2:6, 2:6, 2:4] = 1
    lab_r[2:6, 2:7, 2:4] = 1
    lab_r[20:25, 20:25, 5:8] = 2  # left kidney missed by the prediction
    rows = {r["region"]: r for r in evaluate_labels(lab_p, lab_r, (1.0, 1.0, 3.0))}
    assert set(rows) == {"label_1", "label_2"}
    assert rows["label_2"]["hd95_mm"] == math.inf and rows["label_2"]["dice"] == 0.0
    full = Confusion.from_masks(lab_p == 1, lab_r == 1)
    assert rows["label_1"]["specificity"] == full.specificity
    assert rows["label_1"]["accuracy"] == full.accuracy
    summary = {(s["region"], s["metric"]): s for s in summarise(
        list(rows.values()) + [dict(rows["label_2"], hd95_mm=3.0)])}
    s = summary[("label_2", "hd95_mm")]
    assert (s["n"], s["n_inf"], s["mean"], s["max"]) == (2, 1, math.inf, math.inf)
    assert not any(v != v for st in summary.values() for v in st.values() if isinstance(v, float))


# ---------------------------------------------------------------- 2D ultrasound masks

@needs_kidneyus
def test_2d_metrics_on_real_ultrasound_masks():
    from PIL import Image as PILImage

    name = sorted((KIDNEYUS / "reviewed_masks_1" / "capsule").iterdir())[0].name
    a = np.array(PILImage.open(KIDNEYUS / "reviewed_masks_1" / "capsule" / name)) > 0
    b = np.array(PILImage.open(KIDNEYUS / "reviewed_masks_2" / "capsule" / name)) > 0
    a, b = (m if m.ndim == 2 else m[..., 0] for m in (a, b))
    assert a.any() and b.any()
    c = Confusion.from_masks(a, b)
    assert c.tp == np.count_nonzero(a & b) and c.tn == np.count_nonzero(~a & ~b)
    assert c.jaccard == pytest.approx(np.count_nonzero(a & b) / np.count_nonzero(a | b))
    assert_same(our_figures(a, b, (1.0, 1.0), 2.0), reference_figures(a, b, (1.0, 1.0), 2.0))


# ---------------------------------------------------------------- bad input

def test_bad_input_names_the_argument():
    m = np.zeros((4, 4), bool)
    with pytest.raises(TypeError, match="pred: expected dtype bool"):
        dice(m.astype(np.uint8), m)
    with pytest.raises(TypeError, match="ref"):
        surface_distances(m, [[0]], (1.0, 1.0))
    with pytest.raises(ValueError, match="shapes differ"):
        dice(m, np.zeros((4, 5), bool))
    for bad in (None, (1.0,), (1.0, 0.0), (1.0, -2.0), (1.0, float("nan"))):
        with pytest.raises(ValueError, match="spacing_mm"):
            surface_distances(m, m, bad)
    with pytest.raises(ValueError, match="percent"):
        robust_hausdorff_mm(surface_distances(m, m, (1.0, 1.0)), 101)
    with pytest.raises(ValueError, match="tolerance_mm"):
        surface_dice(surface_distances(m, m, (1.0, 1.0)), -1.0)
    lab = np.zeros((5, 5, 5), np.uint8)
    lab[1:3, 1:3, 1:3] = 1
    with pytest.raises(ValueError, match="occur in neither mask"):
        evaluate_labels(lab, lab, (1.0, 1.0, 1.0), [Region("cyst", (3,))], require_present=True)
    with pytest.raises(TypeError, match="integer labels"):
        evaluate_labels(lab + 0.5, lab, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing_mm"):
        evaluate_labels(lab, lab, None)
