"""Unsupervised pipeline (seed 001): ROI detection on a phantom, cluster selection, the
baselines, registration, the flags for bad input, and the CLI end to end on a real crop."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.api import example_dir
from kidneyseg.io import Image, read_image
from kidneyseg.localize import ROIConfig, ball_mm, detect_kidney_rois, high_intensity_mode
from kidneyseg.metrics import dice
from kidneyseg.models.baselines import otsu_kidney, watershed_kidney
from kidneyseg.pipelines.unsupervised import UnsupervisedConfig, UnsupervisedKidneyPipeline
from kidneyseg.postprocess.clusters import clamp_to_seed, refine_boundary, select_kidney_clusters
from kidneyseg.preprocess.registration import RegistrationError, register_to
from kidneyseg.training.clustering import ClusterConfig

from ..conftest import ellipsoid

SPACING = (1.5, 1.5, 6.0)


@pytest.fixture(scope="module")
def body_phantom():
    """RAS volume: an elliptical 'body' (intensity 100) holding two bright ellipsoidal
    'kidneys' (400) posteriorly, one each side of the midline, a bright 'spine' column on
    the midline and a bright anterior 'bowel' blob on the right; Gaussian noise."""
    shape = (160, 120, 24)
    grid_c = np.array(shape) * SPACING / 2
    body = ellipsoid(shape, SPACING, grid_c, (110, 80, 400))
    right = ellipsoid(shape, SPACING, (grid_c[0] + 60, grid_c[1] - 35, 70), (22, 16, 45))
    left = ellipsoid(shape, SPACING, (grid_c[0] - 60, grid_c[1] - 35, 80), (22, 16, 45))
    spine = ellipsoid(shape, SPACING, (grid_c[0], grid_c[1] - 50, 72), (8, 8, 400))
    bowel = ellipsoid(shape, SPACING, (grid_c[0] + 40, grid_c[1] + 40, 72), (15, 15, 30))
    rng = np.random.default_rng(1)
    img = np.where(body, 100.0, 5.0)
    for m in (right, left, spine, bowel):
        img[m] = 400.0
    img = (img + rng.normal(0, 8, shape)).astype(np.float32)
    affine = np.diag(list(SPACING) + [1.0])
    affine[:3, 3] = (-grid_c[0], -grid_c[1], -60.0)
    return img, affine, right, left


def test_high_intensity_mode_finds_the_bright_class():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(100, 10, 50_000), rng.normal(300, 20, 20_000), rng.normal(700, 30, 8_000)])
    mode, thr = high_intensity_mode(values)
    assert mode == pytest.approx(700, abs=15)
    assert 640 < thr < mode  # the lower half-height edge of the mode (700 - 1.18 * 30 = 665)
    with pytest.raises(ValueError, match="distinct"):
        high_intensity_mode(np.ones(100))


def test_ball_mm_is_a_ball_in_physical_space():
    b = ball_mm(5, (1.25, 1.25, 7.7))
    assert b.shape == (11, 11, 1)  # 6.25 mm: 5 voxels in-plane, none through-plane
    iso = ball_mm(2, (1.0, 1.0, 1.0))
    assert iso.shape == (5, 5, 5) and iso.sum() == 33 and iso[2, 2, 2]
    assert ball_mm(0, (1.0, 2.0, 3.0)).shape == (1, 1, 1)


def test_roi_boxes_hold_each_kidney_on_its_side(body_phantom):
    img, affine, right, left = body_phantom
    found = detect_kidney_rois(img, affine)
    sides = {r.side: r for r in found.rois}
    assert set(sides) == {"right", "left"}
    for side, truth in (("right", right), ("left", left)):
        roi = sides[side]
        assert truth[roi.slices].sum() == truth.sum()  # the whole kidney is inside its box
        assert dice(roi.seed, truth[roi.slices]) > 0.9  # and the seed is the kidney, not the spine or bowel
        # world corners follow from the voxel corners through the affine
        lo = affine[:3, :3] @ np.array(roi.lo_voxel) + affine[:3, 3]
        assert np.allclose(lo, roi.lo_world_mm)
    assert sides["right"].lo_world_mm[0] > found.midline_x_mm > sides["left"].hi_world_mm[0]
    single = detect_kidney_rois(img, affine, ROIConfig(expected_kidneys=1))
    assert [r.side for r in single.rois] == ["single"]


def test_left_roi_is_the_kidney_not_a_more_posterior_spleen(body_phantom):
    """CHAOS cases 10 and 22: the spleen reaches further back than the left kidney, above it.
    The height term picks the component level with the right kidney; without it (weight 0,
    the plain most-posterior rule) the spleen is chosen."""
    img, affine, right, left = body_phantom
    grid_c = np.array(img.shape) * SPACING / 2
    spleen = ellipsoid(img.shape, SPACING, (grid_c[0] - 98, grid_c[1] - 47, 124), (14, 12, 24))
    assert not (spleen & left).any()
    img = img.copy()
    img[spleen] = 400.0
    sides = {r.side: r for r in detect_kidney_rois(img, affine).rois}
    assert dice(sides["left"].seed, left[sides["left"].slices]) > 0.9
    plain = {r.side: r for r in detect_kidney_rois(img, affine, ROIConfig(height_weight=0.0)).rois}
    assert dice(plain["left"].seed, spleen[plain["left"].slices]) > 0.8  # the old rule's failure, reproduced
    with pytest.raises(ValueError, match="height_weight"):
        ROIConfig(height_weight=-1.0)


def test_roi_none_in_a_volume_without_bright_structures():
    rng = np.random.default_rng(2)
    img = rng.normal(100, 3, (64, 64, 10)).astype(np.float32)  # noise: morphology leaves nothing
    found = detect_kidney_rois(img, np.diag([1.5, 1.5, 6.0, 1.0]))
    assert found.rois == []


def test_select_kidney_clusters_by_hand():
    labels = np.zeros((20, 20, 3), np.int64)
    labels[5:15, 5:15] = 1      # the bright core (the seed)
    labels[4:16, 4:16][labels[4:16, 4:16] == 0] = 2  # a one-voxel rim around it: kidney
    labels[:, 18:] = 3          # a band far from the seed: not kidney
    seed = labels == 1
    mask, chosen = select_kidney_clusters(labels, seed, (1.0, 1.0, 1.0), radius_mm=3.0)
    # the background (0) surrounds everything, so most of its voxels are far from the seed
    assert chosen == [1, 2]
    assert mask[4:16, 4:16].all() and not mask[:, 18:].any()
    # with intensities, a rim cluster as dark as the surroundings is not kidney
    intensity = np.where(labels == 1, 10.0, 0.0)
    mask, chosen = select_kidney_clusters(labels, seed, (1.0, 1.0, 1.0), radius_mm=3.0, intensity=intensity)
    assert chosen == [1] and mask.sum() == seed.sum()
    empty, none = select_kidney_clusters(labels, np.zeros_like(seed), (1.0, 1.0, 1.0))
    assert not empty.any() and none == []
    with pytest.raises(ValueError, match="shape"):
        select_kidney_clusters(labels, seed[:-1], (1.0, 1.0, 1.0))


def test_seed_share_keeps_a_kidney_cluster_that_also_covers_a_touching_organ():
    # CHAOS case 34: the cortex cluster also covers the spleen, so most of it is far from the
    # seed; without seed_share the kidney has no cluster at all
    labels = np.zeros((40, 20, 4), np.int64)
    labels[2:12, 5:15] = 1       # kidney core (the seed) ...
    labels[12:38, 2:18] = 1      # ... and a large touching organ in the same cluster
    seed = np.zeros(labels.shape, bool)
    seed[3:11, 6:14, 1:3] = True  # the seed lies in slices 1 and 2 only
    spacing = (1.0, 1.0, 1.0)
    mask, chosen = select_kidney_clusters(labels, seed, spacing, radius_mm=3.0, slice_axis=2)
    assert chosen == [] and not mask.any()
    mask, chosen = select_kidney_clusters(labels, seed, spacing, radius_mm=3.0, slice_axis=2, seed_share=0.5)
    assert chosen == [1] and mask[seed].all()
    assert clamp_to_seed(mask, seed, spacing, 3.0, 2)[20:].sum() == 0  # the clamp then cuts the organ
    # per slice: a cluster made unique per slice (the 2D variant) counts its own slice's seed
    per_slice = labels + 10 * np.arange(4)[None, None, :] * (labels > 0)
    _, chosen2d = select_kidney_clusters(per_slice, seed, spacing, radius_mm=3.0, slice_axis=2, seed_share=0.5)
    assert chosen2d == [11, 21]  # slices 1 and 2 hold the seed; 0 and 3 hold none of it
    for bad in (dict(selection_min_fraction=1.5), dict(selection_seed_share=0.0)):
        with pytest.raises(ValueError, match="selection_"):
            UnsupervisedConfig(**bad)


def test_clamp_to_seed_cuts_a_touching_organ_of_the_same_cluster():
    spacing = (1.5, 1.5, 4.0)
    shape = (60, 50, 12)
    kidney = ellipsoid(shape, spacing, (40, 35, 24), (14, 10, 16))
    spleen = ellipsoid(shape, spacing, (40, 60, 24), (16, 16, 18))  # touches the kidney's front
    seed = ellipsoid(shape, spacing, (40, 35, 24), (9, 6, 10))  # the bright core only
    selected = kidney | spleen  # one cluster took both organs: the selection keeps it whole
    out = clamp_to_seed(selected, seed, spacing, radius_mm=10.0)
    assert out[kidney].mean() == 1.0  # the whole kidney lies within 10 mm of its core
    assert out[spleen & ~kidney].mean() < 0.3  # most of the spleen is cut
    assert dice(out, kidney) > 0.85 > dice(selected, kidney)
    assert not clamp_to_seed(selected, np.zeros_like(seed), spacing, 10.0).any()


def test_refine_boundary_redecides_the_surface_by_intensity():
    truth = np.zeros((20, 20, 3), bool)
    truth[5:15, 5:15] = True
    intensity = np.where(truth, 10.0, 1.0)
    blocky = np.zeros_like(truth)
    blocky[4:16, 4:16] = True  # one voxel too wide, as after upsampling 2x blocks
    out = refine_boundary(blocky, intensity, truth, (1.0, 1.0, 1.0), (2, 2, 1), radius_mm=3.0)
    assert np.array_equal(out, truth)
    assert refine_boundary(blocky, intensity, truth, (1.0, 1.0, 1.0), (1, 1, 1)) is blocky  # nothing to refine


def test_baselines_recover_a_bright_ellipsoid(body_phantom):
    img, affine, right, _ = body_phantom
    roi = {r.side: r for r in detect_kidney_rois(img, affine).rois}["right"]
    box = img[roi.slices]
    truth = right[roi.slices]
    assert dice(otsu_kidney(box, roi.seed), truth) > 0.9
    assert dice(watershed_kidney(box, roi.seed, SPACING), truth) > 0.9


def test_pipeline_flags_no_roi_and_not_converged(body_phantom):
    img, affine, right, left = body_phantom
    noise = Image(np.random.default_rng(3).normal(100, 3, (64, 64, 10)).astype(np.float32), np.diag([1.5, 1.5, 6.0, 1.0]))
    res = UnsupervisedKidneyPipeline().segment(noise)
    assert res.qc["no_roi"] and res.qc["empty"] and not res.mask.array.any()
    assert "cluster_dtype" not in res.qc  # nothing was clustered
    for precision in ("float32", "bfloat16"):
        stuck = UnsupervisedConfig(cluster=ClusterConfig(max_iterations=3, min_iterations=3, epsilon=0.0,
                                                         precision=precision))
        res = UnsupervisedKidneyPipeline(stuck, "cpu").segment(Image(img, affine))
        assert res.qc["not_converged"] and not res.mask.array.any()
        assert res.qc["iterations_right"] == 3
        assert res.qc["cluster_dtype"] == precision


def test_pipeline_on_the_phantom_segments_both_kidneys(body_phantom):
    img, affine, right, left = body_phantom
    res = UnsupervisedKidneyPipeline().segment(Image(img, affine))
    assert res.qc["kidney_count"] == 2 and not res.qc["not_converged"]
    assert dice(res.mask.array == 1, right) > 0.85
    assert dice(res.mask.array == 2, left) > 0.85
    assert res.mask.shape == img.shape and np.array_equal(res.mask.affine, affine)
    # regions() is the segment's own first half: the same boxes it reports
    found = UnsupervisedKidneyPipeline().regions(Image(img, affine)).found
    assert sorted(r.side for r in found.rois) == ["left", "right"]
    for roi in found.rois:
        assert res.qc[f"roi_{roi.side}_mm"] == " ".join(f"{a:.1f}:{b:.1f}" for a, b in zip(roi.lo_world_mm, roi.hi_world_mm))
        side = right if roi.side == "right" else left
        assert side[roi.slices].sum() == side.sum()  # the box holds its kidney (canonical = input grid here)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_two_boxes_run_side_by_side_as_each_would_alone_with_its_threads(body_phantom, precision):
    # also catches the two threads drawing their initial weights from torch's one generator;
    # a few iterations suffice for that (bfloat16 is emulated here: 1.4 s per iteration and box)
    import torch

    img, affine, right, left = body_phantom
    quick = UnsupervisedConfig(cluster=ClusterConfig(epsilon=1.0, min_iterations=3, precision=precision))
    pipe = UnsupervisedKidneyPipeline(quick, "cpu")
    found = detect_kidney_rois(img, affine)
    boxes = [([img[roi.slices]], roi.seed) for roi in found.rois]
    assert len(boxes) == 2
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        side_by_side = pipe._segment_boxes(boxes, SPACING)
        assert torch.get_num_threads() == 2  # restored
        torch.set_num_threads(1)  # each box alone, with the one thread it had
        alone = [pipe._segment_box(ch, seed, SPACING) for ch, seed in boxes]
    finally:
        torch.set_num_threads(before)
    for (m1, i1), (m2, i2), truth in zip(side_by_side, alone, (right, left)):
        assert m1.any() and np.array_equal(m1, m2) and i1 == i2


def test_registration_is_the_same_on_every_run_with_seed_0():
    # SimpleITK reads a sampling seed of 0 as "seed from the wall clock": before the fix two
    # runs with the default seed 0 gave different images
    import SimpleITK as sitk

    from kidneyseg.preprocess.registration import _itk_seed, sampling_percentages

    img = read_image(example_dir() / "image_39.nii.gz", dtype=np.float32)
    crop = img.array[60:180, 60:140, 6:18]
    aff = img.affine.copy()
    aff[:3, 3] = aff[:3, :3] @ np.array([60, 60, 6]) + aff[:3, 3]
    moved = aff.copy()
    moved[:3, 3] += (3.0, -2.0, 0.0)
    fixed, moving = Image(crop, aff), Image(np.sqrt(crop - crop.min()), moved)
    a = register_to(fixed, moving, metric="mi", iterations=5, max_samples=3000)
    b = register_to(fixed, moving, metric="mi", iterations=5, max_samples=3000)
    assert np.array_equal(a.image.array, b.image.array) and a.metric_value == b.metric_value
    assert _itk_seed(0) != sitk.sitkWallClock
    with pytest.raises(ValueError, match="seed"):
        register_to(fixed, moving, seed=-1)
    # the cap: 20 % of each level's voxels until that exceeds max_samples
    assert sampling_percentages(1000, None) == [0.2, 0.2, 0.2]
    assert sampling_percentages(64_000_000, 100_000) == pytest.approx([0.1, 0.0125, 100_000 / 64_000_000])
    assert sampling_percentages(64_000, 100_000) == [0.2, 0.2, 0.2]


def test_registration_undoes_a_known_shift():
    img = read_image(example_dir() / "image_39.nii.gz", dtype=np.float32)
    crop = img.array[40:200, 50:150, 4:20]
    aff = img.affine.copy()
    aff[:3, 3] = aff[:3, :3] @ np.array([40, 50, 4]) + aff[:3, 3]
    fixed = Image(crop, aff)
    moved_aff = aff.copy()
    moved_aff[:3, 3] += (6.0, -5.0, 0.0)  # same voxels, placed 6 / 5 mm away in world space
    moving = Image(crop.copy(), moved_aff)
    reg = register_to(fixed, moving, metric="mse", iterations=30)
    assert reg.image.shape == fixed.shape and np.array_equal(reg.image.affine, fixed.affine)
    inner = (slice(15, -15), slice(15, -15), slice(2, -2))

    def err(a):
        return float(np.mean(np.abs(a[inner] - crop[inner])))

    from kidneyseg.preprocess.registration import _to_sitk  # the naive resampling, for reference
    import SimpleITK as sitk
    naive = sitk.GetArrayFromImage(sitk.Resample(_to_sitk(moving), _to_sitk(fixed))).transpose(2, 1, 0)
    assert err(reg.image.array) < 0.5 * err(naive)
    with pytest.raises(ValueError, match="metric"):
        register_to(fixed, moving, metric="cc")
    # a 3 x 3 x 3 'sequence' cannot be registered: SimpleITK's error becomes one clear line
    tiny = Image(np.random.default_rng(0).normal(0, 1, (3, 3, 3)).astype(np.float32), np.eye(4))
    with pytest.raises(RegistrationError, match="registration to .* failed") as info:
        register_to(fixed, tiny, metric="mi", iterations=5)
    assert "\n" not in str(info.value)
