"""The protocol-agnostic MR recipe: label-map synthesis, partial-label loss, acquisition-plane
inference, domain QC flags, CT refusal and the overlay's plane."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage
import pytest
import torch

from kidneyseg.inference.predict import acquisition_axes, predict_multiplane
from kidneyseg.io import Image, to_canonical
from kidneyseg.postprocess.quality import outside_range, uncertain_fraction
from kidneyseg.preprocess.modality import ct_evidence
from kidneyseg.specs.mr_unet import TrainConfig
from kidneyseg.training.multiplane import partial_dice_ce
from kidneyseg.training.synth import (IGNORE, NOT_KIDNEY, SynthesisRanges, generation_map, intensity_classes,
                                      organ_outline, synthesise_slice)

from ..conftest import UKAT, ellipsoid, save_nifti, write_dicom_series

PLAIN = SynthesisRanges(std_max=0.0, blur_px_max=0.0, inplane_mm=(1.5, 1.5), bias_coeff_max=0.0, gamma=(1.0, 1.0),
                        noise_std_max=0.0)
"""No noise, blur, bias, gamma or resolution loss: the generative model's class means only."""


def tiny_label_map() -> np.ndarray:
    lab = np.zeros((1, 24, 20), np.uint8)
    lab[0, 4:12, 3:9] = 1
    lab[0, 14:20, 10:18] = 2
    lab[0, 2:6, 14:19] = 3
    return lab


def test_synthesis_gives_each_class_one_intensity_and_keeps_the_label_map():
    lab = tiny_label_map()
    before = lab.copy()
    img = synthesise_slice(lab, np.random.default_rng(4), 1.5, PLAIN)
    assert img.shape == lab.shape[1:] and img.dtype == np.float32
    np.testing.assert_array_equal(lab, before)  # the label map is not modified
    values = [np.unique(img[lab[0] == v]) for v in range(4)]
    assert all(len(v) == 1 for v in values)  # one intensity per class
    assert len({float(v[0]) for v in values}) == 4  # and the classes differ


def test_organ_outline_is_a_one_pixel_dark_line_and_the_labels_stay():
    """The opposed-phase border line: the ring just outside each organ and one row where two
    organs touch; in the synthesised slice every outline pixel gets one dark value (<= 0.2 before
    gamma, which is 1 here), the rest keeps its class intensity; the label map is unchanged."""
    organs = np.zeros((1, 12, 12), np.uint8)
    organs[0, 3:7, 3:7] = 1            # kidney
    organs[0, 3:7, 7:10] = 2           # liver, touching it
    line = organ_outline(organs)
    ring = np.zeros_like(line)
    ring[0, 2:8, 2:11] = True
    ring[0, 3:7, 3:10] = False         # the ring outside both organs
    ring[0, 3:7, 6] = True             # the kidney's column along the liver
    np.testing.assert_array_equal(line, ring)
    assert not organ_outline(np.zeros((1, 5, 5), np.uint8)).any()
    lab = tiny_label_map()
    before = lab.copy()
    outline = organ_outline((lab == 1).astype(np.uint8))
    img = synthesise_slice(lab, np.random.default_rng(4), 1.5, PLAIN, outline)
    np.testing.assert_array_equal(lab, before)
    assert len(np.unique(img[outline[0]])) == 1 and img[outline[0]][0] <= 0.2 * img.max() + 1e-6
    plain = synthesise_slice(lab, np.random.default_rng(4), 1.5, PLAIN)
    inner = (lab[0] == 1) & ~outline[0]
    assert len(np.unique(img[inner])) == 1 and not np.array_equal(img, plain)


def test_outline_fraction_zero_leaves_the_batches_unchanged():
    """``synth_outline_fraction`` 0 (every model before 2026-12-04) draws nothing extra: the same
    seed gives the same batch as before; 1 changes the synthesised patches only."""
    from kidneyseg.training.multiplane import sample_plane_batch
    from kidneyseg.training.synth import PlaneVolume

    shape = (30, 28, 26)
    kid = ellipsoid(shape, (2.0, 2.0, 2.0), (30, 28, 26), (8, 6, 10))
    vol = PlaneVolume("p", (kid * 2.0 - 1).astype(np.float32), kid.astype(np.uint8), (1 + kid).astype(np.uint8),
                      np.argwhere(kid))
    cfg = TrainConfig(recipe="multiplane", context_slices=0, patch_size=(32, 32), batch_size=6, synth_fraction=1.0,
                      foreground_fraction=1.0, auxiliary_labels=())
    a, ya = sample_plane_batch([vol], cfg, np.random.default_rng(3), None)
    b, yb = sample_plane_batch([vol], dataclasses.replace(cfg, synth_outline_fraction=0.0), np.random.default_rng(3), None)
    c, yc = sample_plane_batch([vol], dataclasses.replace(cfg, synth_outline_fraction=1.0), np.random.default_rng(3), None)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert torch.equal(ya[:1], yc[:1]) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="synth_outline_fraction"):
        TrainConfig(recipe="multiplane", context_slices=0, synth_outline_fraction=1.5)


def test_elastic_deformation_bends_image_and_labels_together_and_is_off_by_default():
    """``augment_elastic_prob``: with 1 every patch is deformed (MONAI ``Rand2DElasticd``), the
    label stays a label (0/1 only, about the same area) and moves with the image; seeded; with 0
    (every model before 2026-12-04) the transform list is the one it always was."""
    from monai import transforms as mt

    from kidneyseg.training.data import augmentation

    yy, xx = np.mgrid[0:96, 0:96]
    lab = (((yy - 48) / 20.0) ** 2 + ((xx - 44) / 12.0) ** 2 <= 1).astype(np.float32)[None]
    img = lab * 2.0 - 1.0
    base = TrainConfig(recipe="multiplane", context_slices=0, patch_size=(96, 96), augment_rotation_deg=0.0,
                       augment_scale=0.0, augment_intensity="standard")
    on = dataclasses.replace(base, augment_elastic_prob=1.0)
    assert not any(isinstance(t, mt.Rand2DElasticd) for t in augmentation(base).transforms)
    assert [type(t) for t in augmentation(on).transforms if not isinstance(t, mt.Rand2DElasticd)] \
        == [type(t) for t in augmentation(base).transforms]
    only = mt.Compose([t for t in augmentation(on).transforms if isinstance(t, mt.Rand2DElasticd)])
    outs = []
    for seed in (5, 5, 6):
        only.set_random_state(seed=seed)
        o = only({"image": img.copy(), "label": lab.copy()})
        outs.append((np.asarray(o["image"])[0], np.asarray(o["label"])[0]))
    (i1, l1), (i2, l2), (i3, l3) = outs
    np.testing.assert_array_equal(l1, l2)
    assert set(np.unique(l1)) <= {0.0, 1.0}
    assert not np.array_equal(l1, lab[0]) and not np.array_equal(l1, l3)
    assert abs(l1.sum() - lab.sum()) < 0.25 * lab.sum()
    assert ((i1 > 0) == (l1 > 0.5)).mean() > 0.97  # the image moved with its label
    with pytest.raises(ValueError, match="augment_elastic_prob"):
        TrainConfig(augment_elastic_prob=1.5)
    with pytest.raises(ValueError, match="augment_elastic_prob"):
        TrainConfig(spatial_dims=3, patch_size=(64, 64, 32), augment_elastic_prob=0.5)


def test_synthesis_is_seeded_and_contrast_changes_between_samples():
    lab = tiny_label_map()
    a = synthesise_slice(lab, np.random.default_rng(7), 1.5)
    b = synthesise_slice(lab, np.random.default_rng(7), 1.5)
    c = synthesise_slice(lab, np.random.default_rng(8), 1.5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # across samples the kidney (label 1) is sometimes brighter, sometimes darker than label 2
    order = {bool(synthesise_slice(lab, np.random.default_rng(s), 1.5, PLAIN)[lab[0] == 1].mean()
                  > synthesise_slice(lab, np.random.default_rng(s), 1.5, PLAIN)[lab[0] == 2].mean()) for s in range(20)}
    assert order == {True, False}


def test_slab_thickness_averages_neighbouring_slices():
    lab = np.zeros((3, 10, 10), np.uint8)
    lab[1, 3:7, 3:7] = 1  # the structure only in the middle slice of a 3-slice slab
    img = synthesise_slice(lab, np.random.default_rng(0), 1.5, PLAIN)
    inside, outside = img[4, 4], img[0, 0]
    single = synthesise_slice(lab[1:2], np.random.default_rng(0), 1.5, PLAIN)
    # partial volume: inside = (2 m0 + m1) / 3 against m0 outside (same class means: same seed);
    # the images are scaled by their peaks, so compare the ratios outside / inside
    r = single[0, 0] / single[4, 4]
    assert outside / inside == pytest.approx(3 * r / (2 * r + 1), rel=1e-4)


def test_generation_map_orders_tissue_classes_and_keeps_organs():
    rng = np.random.default_rng(0)
    img = np.where(rng.random((30, 30, 4)) < 0.5, 10.0, 100.0) + rng.normal(0, 1, (30, 30, 4))
    organs = np.zeros(img.shape, np.uint8)
    organs[10:15, 10:15] = 1
    organs[20:25, 2:8] = 2
    body = np.ones(img.shape, bool)
    body[:2] = False
    gen = generation_map(img, organs, body, tissue_classes=2, kidney_subclasses=2, seed=0)
    assert gen[:2].max() == 0  # outside the body
    tissue = (organs == 0) & body
    dark, bright = gen[tissue & (img < 50)], gen[tissue & (img > 50)]
    assert set(np.unique(dark)) == {1} and set(np.unique(bright)) == {2}
    assert set(np.unique(gen[organs == 1])) <= {3, 4}
    assert set(np.unique(gen[organs == 2])) == {5}
    assert intensity_classes(np.full(100, 3.0), 4, 0).max() == 0  # one value: one class


def test_perirenal_shell_is_a_class_of_its_own_and_off_by_default():
    """``shell_px``: the tissue within that distance of the kidney gets one new value (after the
    organs), whatever its mixture class; organs, the kidney and outside the body keep theirs;
    0 gives the map it always gave."""
    rng = np.random.default_rng(0)
    img = np.where(rng.random((30, 30, 6)) < 0.5, 10.0, 100.0) + rng.normal(0, 1, (30, 30, 6))
    organs = np.zeros(img.shape, np.uint8)
    organs[10:15, 10:15, 1:5] = 1
    organs[15:20, 10:15, 1:5] = 2  # an organ touching the kidney keeps its value
    body = np.ones(img.shape, bool)
    body[:2] = False
    plain = generation_map(img, organs, body, tissue_classes=2, kidney_subclasses=2, seed=0)
    np.testing.assert_array_equal(plain, generation_map(img, organs, body, 2, 2, 0, shell_px=0.0))
    shelled = generation_map(img, organs, body, 2, 2, 0, shell_px=2.0)
    dist = ndimage.distance_transform_edt(organs != 1)
    shell = (organs == 0) & body & (dist <= 2.0)
    assert set(np.unique(shelled[shell])) == {6}  # 1-2 tissue, 3-4 kidney, 5 the other organ, 6 the shell
    assert set(np.unique(plain[shell])) == {1, 2}  # both mixture classes were inside the shell
    np.testing.assert_array_equal(shelled[~shell], plain[~shell])
    with pytest.raises(ValueError, match="perirenal_shell_mm"):
        TrainConfig(recipe="multiplane", context_slices=0, perirenal_shell_mm=-1.0)


def test_partial_label_loss_ignores_unlabelled_slices():
    torch.manual_seed(0)
    target = torch.full((2, 1, 16, 16), IGNORE, dtype=torch.long)
    target[0, 0, 8] = 0  # one labelled row (the labelled slice of a single-slice mask)
    target[0, 0, 8, 4:10] = 1
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    loss = partial_dice_ce(logits, target)
    loss.backward()
    grad = logits.grad.abs().sum(1)[:, :, :]  # (B, H, W)
    labelled = (target[:, 0] != IGNORE)
    assert grad[labelled].min() > 0
    assert float(grad[~labelled].max()) == 0.0  # unlabelled pixels contribute nothing
    # changing logits of unlabelled pixels does not change the loss
    other = logits.detach().clone()
    other[1] = torch.randn(4, 16, 16) * 10
    other[0, :, :8] = 5.0
    assert float(partial_dice_ce(other, target)) == pytest.approx(float(loss.detach()), rel=1e-6)
    # nothing labelled: zero loss with a graph
    empty = partial_dice_ce(logits, torch.full_like(target, IGNORE))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_not_kidney_target_accepts_any_non_kidney_class():
    target = torch.full((1, 1, 4, 4), NOT_KIDNEY, dtype=torch.long)
    liver = torch.full((1, 4, 4, 4), -20.0)
    liver[:, 2] = 20.0  # confident liver: right for a voxel known only not to be kidney
    kidney = torch.full((1, 4, 4, 4), -20.0)
    kidney[:, 1] = 20.0
    assert float(partial_dice_ce(liver, target)) < 1e-3
    assert float(partial_dice_ce(kidney, target)) > 10


def test_acquisition_axes():
    assert acquisition_axes((1.25, 1.25, 7.7)) == [2]  # axial slices
    assert acquisition_axes((1.5, 5.5, 1.5)) == [1]  # coronal
    assert acquisition_axes((6.0, 1.0, 1.0)) == [0]  # sagittal
    assert acquisition_axes((3.0, 3.0, 3.0)) == [0, 1, 2]  # isotropic: three planes fused


def test_multiplane_config_validation():
    with pytest.raises(ValueError, match="context_slices 0"):
        TrainConfig(recipe="multiplane", context_slices=1)
    with pytest.raises(ValueError, match="plane_weights"):
        TrainConfig(recipe="multiplane", context_slices=0, plane_weights={"axial": 1.0})
    cfg = TrainConfig(recipe="multiplane", context_slices=0, extra_datasets=[["a", "ukat"]])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


class _PlaneProbe(torch.nn.Module):
    """A stand-in network that predicts kidney where the slice is bright, and records the
    slice sizes it was given."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        k = (x[:, :1] > 0.5).float() * 20 - 10
        return torch.cat([-k, k, torch.full_like(k, -10), torch.full_like(k, -10)], 1)


def test_multiplane_inference_runs_in_the_acquisition_plane_and_keeps_the_grid():
    spacing = (1.5, 5.0, 1.5)  # coronal slices (thick along A-P)
    shape = (64, 12, 80)
    kidney = ellipsoid(shape, spacing, (48, 30, 60), (18, 14, 40))
    rng = np.random.default_rng(0)
    arr = (100 + 100 * kidney + rng.normal(0, 3, shape)).astype(np.float32)
    image = Image(arr, np.diag(list(spacing) + [1.0]))
    cfg = TrainConfig(recipe="multiplane", context_slices=0, target_spacing_mm=1.5)
    net = _PlaneProbe()
    labels, prepared, probs = predict_multiplane(net, image, cfg, torch.device("cpu"))
    assert labels.shape == shape and probs.shape == (4, *shape)
    # the network saw coronal slices: (X, Z) at 1.5 mm, padded to multiples of 16
    assert {s for s in net.shapes} == {(64, 80)}
    assert prepared.planes == (1,)  # the plane the QC threshold is chosen by
    dice = 2 * np.sum((labels == 1) & kidney) / (np.sum(labels == 1) + kidney.sum())
    assert dice > 0.95
    # planes="all": axial and sagittal passes are added (60 mm A-P at 1.5 mm: 40 -> padded 48 pixels); a
    # 4-slice slab (20 mm A-P) is too narrow for a kidney in those planes, so only its coronal plane is used
    from kidneyseg.inference.settings import InferenceConfig

    net.shapes.clear()
    labels_all, prepared_all, _ = predict_multiplane(net, image, cfg, torch.device("cpu"), InferenceConfig(planes="all"))
    assert {s for s in net.shapes} == {(64, 80), (48, 80), (64, 48)} and labels_all.shape == shape
    assert sorted(prepared_all.planes) == [0, 1, 2]
    slab = Image(np.ascontiguousarray(arr[:, 4:8]), np.diag(list(spacing) + [1.0]))
    net.shapes.clear()
    _, prepared_slab, _ = predict_multiplane(net, slab, cfg, torch.device("cpu"), InferenceConfig(planes="all"))
    assert {s for s in net.shapes} == {(64, 80)} and prepared_slab.planes == (1,)  # too narrow: left out
    with pytest.raises(ValueError, match="planes"):
        InferenceConfig(planes="diagonal")


def test_planes_by_coverage_adds_planes_only_to_scans_that_are_not_slabs():
    from kidneyseg.inference.predict import planes_used
    from kidneyseg.io.orientation import PLANES_COVERAGE_MM
    from kidneyseg.io.orientation import acquisition_axes

    def axes(shape, spacing, planes="coverage"):
        canonical = Image(np.zeros(shape, np.float32), np.diag(list(spacing) + [1.0]))
        return planes_used(canonical, acquisition_axes(spacing), planes)

    # geometries of the scans the rule was written for (benchmarks/README.md, "Planes by coverage")
    assert axes((128, 11, 128), (3.0, 5.5, 3.0)) == [1]  # ukat Philips: coronal slab, 60.5 mm A-P
    assert axes((256, 18, 256), (1.56, 5.0, 1.56)) == [1]  # ukat GE: 90 mm
    assert axes((256, 17, 256), (1.5, 5.5, 1.5)) == [1]  # Renal Segmentor test_sub_02: 93.5 mm
    assert axes((256, 256, 31), (1.25, 1.25, 7.7)) == [0, 1, 2]  # CHAOS, fewest slices: 238.7 mm
    assert axes((117, 91, 20), (3.0, 3.0, 3.0)) == [0, 1, 2]  # near isotropic: three planes whatever the extent
    # the threshold itself, along whichever axis the slices run
    n = int(np.ceil(PLANES_COVERAGE_MM / 5.0))
    assert axes((100, 100, n), (1.5, 1.5, 5.0)) == [0, 1, 2]
    assert axes((100, 100, n - 1), (1.5, 1.5, 5.0)) == [2]
    assert axes((n - 1, 100, 100), (5.0, 1.5, 1.5)) == [0]
    assert axes((128, 11, 128), (3.0, 5.5, 3.0), "acquisition") == [1]
    assert axes((128, 11, 128), (3.0, 5.5, 3.0), "all") == [0, 1, 2]
    assert axes((256, 256, 40), (1.25, 1.25, 7.7), "acquisition") == [2]


def test_planes_by_field_of_view_leave_strips_out_of_near_isotropic_slabs():
    """``"planes": "fov"``: a near-isotropic scan keeps only the planes whose slices are at least
    ``PLANES_COVERAGE_MM`` on both sides (else its widest plane); every other geometry gets what
    ``"coverage"`` gives it (benchmarks/README.md, "Near-isotropic slabs")."""
    from kidneyseg.inference.predict import planes_used
    from kidneyseg.io.orientation import PLANES_COVERAGE_MM, acquisition_axes

    def axes(shape, spacing, planes="fov"):
        canonical = Image(np.zeros(shape, np.float32), np.diag(list(spacing) + [1.0]))
        return planes_used(canonical, acquisition_axes(spacing), planes)

    for shape, spacing in [((128, 11, 128), (3.0, 5.5, 3.0)), ((256, 18, 256), (1.56, 5.0, 1.56)),
                           ((256, 256, 31), (1.25, 1.25, 7.7)), ((100, 100, 29), (1.5, 1.5, 5.0)),
                           ((200, 200, 200), (1.5, 1.5, 1.5))]:
        assert axes(shape, spacing) == axes(shape, spacing, "coverage")
    assert axes((200, 200, 200), (1.5, 1.5, 1.5)) == [0, 1, 2]  # 300 mm every way
    assert axes((117, 91, 20), (3.0, 3.0, 3.0)) == [2]  # TotalSegmentator's T1 example: a 60 mm axial slab
    assert axes((117, 20, 91), (3.0, 3.0, 3.0)) == [1]  # the same as a coronal slab
    n = int(np.ceil(PLANES_COVERAGE_MM / 3.0))
    assert axes((n, n, n), (3.0, 3.0, 3.0)) == [0, 1, 2]
    assert axes((n, n, n - 1), (3.0, 3.0, 3.0)) == [2]  # one side short: only the plane that does not contain it
    assert axes((40, 40, 40), (3.0, 3.0, 3.0)) == [2]  # no plane wide enough: the widest, ties to axial


def _coronal_body_phantom(body_value: float, kidney_value: float):
    """A coronal scan (1.5 x 5 x 1.5 mm, 64 x 12 x 80): a body ellipsoid at ``body_value`` with a
    kidney ellipsoid adding ``kidney_value``, noise sd 3. Returns ``(array, kidney mask, spacing,
    the generator after the noise)``."""
    spacing = (1.5, 5.0, 1.5)
    shape = (64, 12, 80)
    kidney = ellipsoid(shape, spacing, (48, 30, 60), (18, 14, 40))
    body = ellipsoid(shape, spacing, (48, 30, 60), (40, 60, 55))
    rng = np.random.default_rng(0)
    arr = (body_value * body + kidney_value * kidney + rng.normal(0, 3, shape)).astype(np.float32)
    return arr, kidney, spacing, rng


def test_slice_normalisation_gives_each_acquired_slice_its_own_scale():
    """``InferenceConfig(normalise="slice")``: a coronal scan whose slices differ in brightness
    (every other slice at 25 %, as ge_01's slices differ) loses the kidney on the dim slices
    when the volume is z-scored once, and keeps it when each slice is z-scored on its own."""
    from kidneyseg.inference.predict import normalise_slices
    from kidneyseg.inference.settings import InferenceConfig

    arr, kidney, spacing, rng = _coronal_body_phantom(100, 100)
    shape = arr.shape
    gain = np.where(np.arange(shape[1]) % 2 == 0, 1.0, 0.25).astype(np.float32)
    arr *= gain[None, :, None]
    image = Image(arr, np.diag(list(spacing) + [1.0]))
    cfg = TrainConfig(recipe="multiplane", context_slices=0, target_spacing_mm=1.5)
    dim = np.zeros(shape, bool)
    dim[:, 1::2] = kidney[:, 1::2].any(axis=(0, 2))[None, :, None]  # the dim slices through the kidney
    assert dim.any()

    def dice_on_dim(labels):
        k = kidney & dim
        return 2 * np.sum((labels == 1) & k) / (np.sum((labels == 1) & dim) + k.sum())

    whole, _, _ = predict_multiplane(_PlaneProbe(), image, cfg, torch.device("cpu"))
    per_slice, _, _ = predict_multiplane(_PlaneProbe(), image, cfg, torch.device("cpu"), InferenceConfig(normalise="slice"))
    assert dice_on_dim(whole) < 0.2 and dice_on_dim(per_slice) > 0.9
    stack = np.stack([np.full((4, 4), 7.0), rng.normal(5, 2, (4, 4))], axis=2)
    out = normalise_slices(stack)
    assert out.dtype == np.float32 and not out[:, :, 0].any() and abs(out[:, :, 1].mean()) < 1e-5
    with pytest.raises(ValueError, match="normalise"):
        InferenceConfig(normalise="histogram")


def test_uncertain_fraction_and_volume_range():
    sure = np.zeros((20, 20, 10), np.float32)
    sure[5:15, 5:15, 2:8] = 0.99
    sure[4, 5:15, 2:8] = 0.5  # a thin rim of doubt
    assert uncertain_fraction(sure) < 0.2
    uniform = np.full((20, 20, 10), 0.45, np.float32)  # the network hesitates everywhere
    assert uncertain_fraction(uniform) > 100
    assert outside_range({"kidney_right_ml": 3.0, "kidney_left_ml": 150.0}, ["kidney_right", "kidney_left"], (80, 320))
    assert not outside_range({"kidney_right_ml": 120.0, "kidney_left_ml": 150.0}, ["kidney_right", "kidney_left"], (80, 320))
    assert outside_range({"kidney_right_ml": 120.0}, ["kidney_right", "kidney_left"], (80, 320))  # a missing kidney


@pytest.fixture(scope="module")
def shipped_pipeline():
    from kidneyseg.pipelines.mr_t2 import MRKidneyPipeline

    return MRKidneyPipeline.load(None, "cpu")


def test_qc_flags_on_phantoms(shipped_pipeline, two_kidney_phantom):
    from kidneyseg.inference import prepare

    pipe = shipped_pipeline
    image, labels, affine = two_kidney_phantom
    img = Image(image, affine)
    prepared = prepare(img, pipe.bundle.config.target_spacing_mm, pipe.bundle.config.clip_ratio,
                       pipe.bundle.config.normalisation)
    settings = dataclasses.replace(pipe.bundle.inference, validated_volume_ml=(20.0, 320.0), low_confidence_threshold=1.0)
    old = pipe.bundle
    pipe.bundle = dataclasses.replace(old, inference=settings)
    try:
        tiny = np.zeros(labels.shape, np.uint8)
        tiny[40:44, 30:34, 9:11] = 1  # a few voxels of kidney: far under the validated range
        confident = np.where(tiny > 0, 0.99, 0.01).astype(np.float32)
        r = pipe.finish(img, tiny.copy(), prepared, kidney_probability=confident)
        assert r.qc["volume_outside_validated_range"] is True
        assert r.qc["low_confidence"] is False
        big = (labels > 0).astype(np.uint8)  # two 36 mL ellipsoids, inside the range
        r = pipe.finish(img, big.copy(), prepared, kidney_probability=np.where(big > 0, 0.99, 0.01).astype(np.float32))
        assert r.qc["volume_outside_validated_range"] is False and r.qc["low_confidence"] is False
        uniform = np.full(labels.shape, 0.45, np.float32)  # uniform hesitation
        r = pipe.finish(img, big.copy(), prepared, kidney_probability=uniform)
        assert r.qc["low_confidence"] is True
        # a border of doubt: judged by the one-plane threshold it is low confidence; averaged
        # over three planes, whose own threshold is higher, it is not
        doubt = np.where(big > 0, 0.99, 0.01).astype(np.float32)
        doubt[ndimage.binary_dilation(big > 0, iterations=4) & (big == 0)] = 0.45
        share = uncertain_fraction(doubt)
        assert 1.0 < share < 5.0
        pipe.bundle = dataclasses.replace(old, inference=dataclasses.replace(
            settings, low_confidence_threshold_three_planes=5.0))
        one = pipe.finish(img, big.copy(), prepared, kidney_probability=doubt)
        three = pipe.finish(img, big.copy(), dataclasses.replace(prepared, planes=(0, 1, 2)), kidney_probability=doubt)
        assert one.qc["uncertain_fraction"] == three.qc["uncertain_fraction"]
        assert one.qc["low_confidence"] is True and three.qc["low_confidence"] is False
        # the threshold applied and the planes read are recorded beside the flag
        assert one.qc["low_confidence_threshold"] == 1.0 and three.qc["low_confidence_threshold"] == 5.0
        assert three.qc["planes"] == "axial+coronal+sagittal" and "planes" not in one.qc
    finally:
        pipe.bundle = old


def test_pipeline_splits_at_necks_only_when_its_settings_say_so(shipped_pipeline, two_kidney_phantom):
    """The neck split runs in :meth:`finish` from ``inference.json``: a blob joined to the left
    kidney by a one-voxel bridge is kept without it and dropped with it; probability ranking
    without a probability is refused."""
    from kidneyseg.inference import prepare

    pipe = shipped_pipeline
    image, labels, affine = two_kidney_phantom
    spacing = np.abs(np.diag(affine)[:3])
    centre = (np.array(labels.shape) - 1) * spacing / 2
    body = ellipsoid(labels.shape, spacing, centre, centre + 2 * spacing)  # air around it: a body midline
    img = Image(np.where(body, image, 1.0).astype(np.float32), affine)
    prepared = prepare(img, pipe.bundle.config.target_spacing_mm, pipe.bundle.config.clip_ratio,
                       pipe.bundle.config.normalisation)
    canon_labels = np.asarray(to_canonical(Image(labels, affine))[0].array)
    left = canon_labels == 2
    idx = np.argwhere(left)
    lo = idx.min(0)
    blob = np.zeros(left.shape, bool)  # a block below the left kidney, joined by a one-voxel bridge
    blob[lo[0]:lo[0] + 14, lo[1]:lo[1] + 14, 0:max(lo[2] - 2, 1)] = True
    blob &= ~ndimage.binary_dilation(left, iterations=2)
    assert blob.sum() > 200
    bridge = np.zeros(left.shape, bool)
    x, y, z = idx[np.argmin(idx[:, 2])]
    bridge[x, y, :z] = True
    net = (canon_labels > 0) | blob | bridge
    assert ndimage.label(net, structure=np.ones((3, 3, 3), bool))[1] == 2
    p = np.where(canon_labels > 0, 0.95, np.where(blob | bridge, 0.5, 0.0)).astype(np.float32)
    old = pipe.bundle
    try:
        kept = pipe.finish(img, net.astype(np.uint8), prepared, kidney_probability=p)
        pipe.bundle = dataclasses.replace(old, inference=dataclasses.replace(old.inference, neck_split_mm=4.0))
        split = pipe.finish(img, net.astype(np.uint8), prepared, kidney_probability=p)
        assert kept.volumes_ml["kidney_left_ml"] > split.volumes_ml["kidney_left_ml"]
        assert split.volumes_ml["kidney_left_ml"] == pytest.approx(
            float(left.sum()) * img.voxel_volume_ml / 1.0, rel=0.02)
        pipe.bundle = dataclasses.replace(old, inference=dataclasses.replace(old.inference, neck_split_mm=4.0,
                                                                             component_ranking="probability"))
        with pytest.raises(ValueError, match="probability"):
            pipe.finish(img, net.astype(np.uint8), prepared)
    finally:
        pipe.bundle = old


def test_flagged_scan_is_redrawn_at_the_low_confidence_threshold(shipped_pipeline, two_kidney_phantom):
    """``kidney_threshold_low_confidence``: a scan flagged ``low_confidence`` gets its kidney
    redrawn from the probability at the lower threshold (the hesitant rim joins the kidney); a
    confident scan keeps the labels drawn at ``kidney_threshold``; the threshold applied is
    recorded; without the probability the setting is refused."""
    from kidneyseg.inference import prepare

    pipe = shipped_pipeline
    image, labels, affine = two_kidney_phantom
    img = Image(image, affine)
    prepared = prepare(img, pipe.bundle.config.target_spacing_mm, pipe.bundle.config.clip_ratio,
                       pipe.bundle.config.normalisation)
    big = (labels > 0).astype(np.uint8)  # what the network drew at 0.5
    settings = dataclasses.replace(pipe.bundle.inference, kidney_threshold=0.5, low_confidence_threshold=1.0,
                                   low_confidence_threshold_three_planes=None, kidney_threshold_low_confidence=0.35)
    old = pipe.bundle
    pipe.bundle = dataclasses.replace(old, inference=settings)
    try:
        results = {}
        for rim_voxels in (1, 4):  # a thin hesitant rim (confident scan) or a wide one (flagged)
            p = np.where(big > 0, 0.99, 0.01).astype(np.float32)
            p[ndimage.binary_dilation(big > 0, iterations=rim_voxels) & (big == 0)] = 0.4  # between 0.35 and 0.5
            results[rim_voxels] = pipe.finish(img, big.copy(), prepared, kidney_probability=p)
        thin, wide = results[1], results[4]
        assert thin.qc["low_confidence"] is False and wide.qc["low_confidence"] is True
        assert thin.qc["kidney_threshold"] == 0.5 and wide.qc["kidney_threshold"] == 0.35
        expected_ml = float((labels == 2).sum()) * img.voxel_volume_ml
        assert thin.volumes_ml["kidney_left_ml"] == pytest.approx(expected_ml, rel=1e-6)
        assert wide.volumes_ml["kidney_left_ml"] > 1.5 * expected_ml  # the 4-voxel rim joined the kidney
        with pytest.raises(ValueError, match="kidney_threshold_low_confidence"):
            pipe.finish(img, big.copy(), prepared)
    finally:
        pipe.bundle = old


def test_ct_series_is_refused_by_the_mr_pipeline(tmp_path, two_kidney_phantom, capsys):
    from kidneyseg.cli import main

    image, labels, affine = two_kidney_phantom
    nii = save_nifti((image - 1000).astype(np.float32), affine, tmp_path / "ct.nii.gz")
    series = write_dicom_series(nii, tmp_path / "ct_series", modality="CT")
    before = {p.name: p.read_bytes() for p in series.iterdir()}
    out = tmp_path / "out"
    assert main(["segment", str(series), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "looks like CT" in err[0] and "DICOM Modality is CT" in err[0]
    assert not list(out.glob("*_seg.nii.gz"))
    assert {p.name: p.read_bytes() for p in series.iterdir()} == before  # input untouched


def test_hounsfield_intensities_are_recognised(two_kidney_phantom):
    image, labels, affine = two_kidney_phantom
    ct = np.where(image > 90, 40.0, -1000.0).astype(np.float32)  # body at 40 HU in air at -1000 HU
    ct[:, :10] = -1000.0
    assert "Hounsfield" in ct_evidence(Image(ct, affine))
    assert ct_evidence(Image(image, affine)) is None  # MR magnitudes
    assert ct_evidence(Image(image - 50, affine)) is None  # an offset MR image is not CT
    assert ct_evidence(Image(image, affine, modality="CT")) == "DICOM Modality is CT"


def test_allow_ct_segments_anyway(shipped_pipeline, two_kidney_phantom):
    from kidneyseg.errors import InputError
    from kidneyseg.pipelines import configure_pipeline

    image, labels, affine = two_kidney_phantom
    img = Image(image, affine, modality="CT")
    with pytest.raises(InputError, match="looks like CT"):
        shipped_pipeline.segment(img)
    pipe = configure_pipeline(shipped_pipeline, allow_ct=True)
    try:
        assert pipe.segment(img).mask.shape == image.shape
    finally:
        pipe.allow_ct = False


def test_overlay_uses_the_acquisition_plane(tmp_path):
    from kidneyseg.report.overlay import acquisition_plane, overlay_montage

    spacing = (1.5, 5.5, 1.5)  # coronal acquisition
    shape = (60, 10, 70)
    kid = ellipsoid(shape, spacing, (30, 27, 50), (15, 12, 35))
    arr = (100 + 50 * kid).astype(np.float32)
    img = Image(arr, np.diag(list(spacing) + [1.0]))
    plane = overlay_montage(img, img.with_array(kid.astype(np.uint8)), {1: "kidney_right"}, tmp_path / "o.png",
                            max_slices=4)
    assert plane == "coronal" and (tmp_path / "o.png").stat().st_size > 1000
    assert acquisition_plane((1.25, 1.25, 7.7)) == "axial"
    assert acquisition_plane((2.0, 2.0, 2.0)) == "axial"
    with pytest.raises(ValueError, match="plane"):
        overlay_montage(img, img, {1: "kidney_right"}, tmp_path / "x.png", plane="oblique")


@pytest.mark.skipif(not UKAT.is_dir(), reason="../shared/data/ukat_kidney_masks not present")
def test_ukat_layout_marks_single_slice_masks():
    from kidneyseg.datasets.layouts import ukat_cases
    from kidneyseg.labels import MR_KIDNEYS

    cases = {c.case_id: c for c in ukat_cases(UKAT, MR_KIDNEYS)}
    assert len(cases) == 23
    whole = [c for c in cases.values() if c.labelled_slices is None]
    assert sorted(c.case_id for c in whole) == ["ge_01", "philips_01", "siemens_01"]
    axis, idx = cases["philips_03"].labelled_slices
    assert len(idx) == 1
    assert [c.case_id for c in ukat_cases(UKAT, MR_KIDNEYS, whole_only=True)] == ["ge_01", "philips_01", "siemens_01"]


def test_train_cli_multiplane_recipe_end_to_end(tmp_path, nnunet_dataset, two_kidney_phantom):
    """`kidneyseg train mr-multiprotocol-unet --config` on a tiny nnU-Net dataset, then
    `segment` with the model: the mask keeps the input's grid, the QC values are written."""
    import json

    from kidneyseg.cli import main

    cfg = json.loads((Path(__file__).parents[2] / "configs" / "mr_multiprotocol.json").read_text())
    cfg.update(extra_datasets=[], exclude_cases=[], iterations=3, batch_size=2, patch_size=[32, 32],
               channels=[8, 16], checkpoint_every=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    model = tmp_path / "model"
    assert main(["train", "mr-multiprotocol-unet", "--dataset", str(nnunet_dataset), "--layout", "nnunet",
                 "--config", str(tmp_path / "cfg.json"), "--synth-fraction", "0.5", "-o", str(model), "--quiet"]) == 0
    saved = TrainConfig.from_dict(json.loads((model / "config.json").read_text()))
    assert saved.recipe == "multiplane" and saved.synth_fraction == 0.5  # the flag overrides --config
    image, labels, affine = two_kidney_phantom
    scan = save_nifti(image, affine, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(scan), "-o", str(out), "--model", str(model), "--quiet", "--no-overlay"]) == 0
    import nibabel as nib

    seg = nib.load(str(out / "scan_seg.nii.gz"))
    assert seg.shape == image.shape and np.allclose(seg.affine, affine)
    row = json.loads((out / "volumes.json").read_text())[0]
    assert row["uncertain_fraction"] >= 0


def test_multiprotocol_pipeline_is_registered():
    from kidneyseg.pipelines import PIPELINES

    info = PIPELINES["mr-multiprotocol-unet"]
    assert info.modality == "MR"


def test_shipped_multiprotocol_model_on_the_bundled_case():
    """The shipped mr_multiprotocol_kidney (two seeds, softmax average, 20000 iterations with weight
    averaging over the second half, four shifted passes, kidney threshold 0.5, neck split) on CHAOS
    case 39 (never trained on): the mask keeps the input's grid and both kidneys are found (Dice
    0.936 / 0.895 with these settings, 2026-12-05; the first recipe found only half the left
    kidney, 0.445), with no QC flag raised."""
    from kidneyseg.api import segment
    from kidneyseg.io import read_image

    example = Path(__file__).parents[2] / "src" / "kidneyseg" / "assets" / "example"
    image = read_image(example / "image_39.nii.gz", dtype=np.float32)
    ref = np.asarray(read_image(example / "label_39_kidneys.nii.gz").array)
    result = segment(image, pipeline="mr-multiprotocol-unet", device="cpu")
    assert result.mask.shape == image.shape and np.array_equal(result.mask.affine, image.affine)
    for value in (1, 2):
        pred = result.mask.array == value
        assert 2 * np.sum(pred & (ref == value)) / (pred.sum() + (ref == value).sum()) > 0.8
    assert not result.qc["low_confidence"] and not result.qc["volume_outside_validated_range"]


def test_3d_synthesis_gives_each_class_one_intensity_and_is_seeded():
    from kidneyseg.training.synth import synthesise_volume

    lab = np.zeros((16, 12, 10), np.uint8)
    lab[2:8, 2:6, 2:8] = 1
    lab[9:14, 5:10, 3:9] = 2
    before = lab.copy()
    plain = dataclasses.replace(PLAIN, thickness_mm=(1.0, 1.0))  # no thick slices either
    img = synthesise_volume(lab, np.random.default_rng(3), 1.5, plain)
    assert img.shape == lab.shape and img.dtype == np.float32
    np.testing.assert_array_equal(lab, before)
    values = [np.unique(img[lab == v]) for v in range(3)]
    assert all(len(v) == 1 for v in values) and len({float(v[0]) for v in values}) == 3
    a, b = (synthesise_volume(lab, np.random.default_rng(5), 1.5) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, synthesise_volume(lab, np.random.default_rng(6), 1.5))


def test_3d_multiplane_config_needs_an_isotropic_network():
    with pytest.raises(ValueError, match="z_pool_levels"):
        TrainConfig(recipe="multiplane", context_slices=0, spatial_dims=3, channels=(8, 16, 32), z_pool_levels=1,
                    patch_size=(16, 16, 16))
    cfg = TrainConfig(recipe="multiplane", context_slices=0, spatial_dims=3, channels=(8, 16, 32), z_pool_levels=2,
                      patch_size=(16, 16, 16))
    assert cfg.strides == [(2, 2, 2), (2, 2, 2)]


def test_3d_multiplane_batches_and_inference_keep_the_grid():
    """3D patches with foreground oversampling, the partial-label loss on them, and sliding-window
    inference on an anisotropic coronal image: labels and probabilities on the input's grid."""
    from kidneyseg.training.multiplane import sample_plane_batch
    from kidneyseg.training.synth import PlaneVolume

    shape = (30, 28, 26)
    kid = ellipsoid(shape, (2.0, 2.0, 2.0), (30, 28, 26), (8, 6, 10))
    gen = (1 + kid).astype(np.uint8)
    vol = PlaneVolume("p", (kid * 2.0 - 1).astype(np.float32), kid.astype(np.uint8), gen, np.argwhere(kid))
    cfg = TrainConfig(recipe="multiplane", context_slices=0, spatial_dims=3, channels=(4, 8, 16), z_pool_levels=2,
                      patch_size=(16, 16, 16), batch_size=3, foreground_fraction=0.34, synth_fraction=0.5,
                      auxiliary_labels=())
    x, y = sample_plane_batch([vol], cfg, np.random.default_rng(0), None)
    assert x.shape == (3, 1, 16, 16, 16) and y.shape == (3, 1, 16, 16, 16) and x.dtype == torch.float32
    assert (y[-1] == 1).any()  # the last patch is centred near kidney
    from kidneyseg.models.store import build_network

    net = build_network(cfg).eval()
    loss = partial_dice_ce(net(x), y)
    assert torch.isfinite(loss)
    spacing = (2.0, 5.0, 2.0)
    img_shape = (40, 9, 44)
    image = Image(np.random.default_rng(1).normal(size=img_shape).astype(np.float32), np.diag(list(spacing) + [1.0]))
    labels, prepared, probs = predict_multiplane(net, image, cfg, torch.device("cpu"))
    assert labels.shape == img_shape and probs.shape == (cfg.network_classes, *img_shape)
    torch.testing.assert_close(probs.sum(0), torch.ones(img_shape), atol=1e-4, rtol=0)


def test_left_right_mirror_of_multiplane_patches():
    """``augment_flip_lr`` in the multiplane recipe: about half the patches mirrored along x
    (image and target together, no label change); never a sagittal patch; off by default."""
    from kidneyseg.training.multiplane import _mirror_lr, sample_plane_batch
    from kidneyseg.training.synth import PlaneVolume

    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    tgt = (img > 5).astype(np.uint8)
    on = TrainConfig(recipe="multiplane", context_slices=0, augment_flip_lr=True)
    rng = np.random.default_rng(0)
    outs = [_mirror_lr(img, tgt, on, rng) for _ in range(200)]
    mirrored = [np.array_equal(i, img[::-1]) and np.array_equal(t, tgt[::-1]) for i, t in outs]
    assert all(m or (np.array_equal(i, img) and np.array_equal(t, tgt)) for m, (i, t) in zip(mirrored, outs))
    assert 70 < sum(mirrored) < 130
    assert all(np.array_equal(_mirror_lr(img, tgt, on, rng, None)[0], img) for _ in range(20))
    off = dataclasses.replace(on, augment_flip_lr=False)
    assert all(np.array_equal(_mirror_lr(img, tgt, off, rng)[0], img) for _ in range(20))
    # whole batches: the mirrored image stays on its target (image = +1 on kidney, -1 elsewhere)
    shape = (30, 28, 26)
    kid = ellipsoid(shape, (2.0, 2.0, 2.0), (12, 28, 26), (8, 6, 10))
    vol = PlaneVolume("p", (kid * 2.0 - 1).astype(np.float32), kid.astype(np.uint8), (1 + kid).astype(np.uint8),
                      np.argwhere(kid))
    cfg = dataclasses.replace(on, patch_size=(32, 32), batch_size=16, foreground_fraction=1.0, synth_fraction=0.0,
                              intensity_curve_fraction=0.0, auxiliary_labels=())
    x, y = sample_plane_batch([vol], cfg, np.random.default_rng(1), None)
    inside = x[:, 0] > 0
    assert torch.equal(inside, y[:, 0] == 1)


def test_shipped_multiprotocol_model_is_an_intact_two_seed_ensemble():
    """Each weight file of the shipped ensemble is the one its ensemble.json and model card name
    (a packaging step that drops or swaps a member fails here, not on a user's scan)."""
    from kidneyseg.models.store import default_model_dir, read_ensemble, sha256

    folder = default_model_dir("mr_multiprotocol_kidney")
    members = read_ensemble(folder)
    card = (folder / "model_card.md").read_text()
    assert [m["seed"] for m in members] == [0, 1]
    for m in members:
        assert sha256(folder / m["weights"]) == m["sha256"]
        assert m["sha256"] in card


def test_gamma_test_time_augmentation_averages_the_same_passes_at_each_gamma():
    """``InferenceConfig(tta_gamma=...)``: every pass is repeated on the volume at each gamma
    (:func:`gamma_zscore`) and the softmax is the mean of the single-gamma predictions; gamma 1
    alone is the plain input, bit for bit; ``--fast`` (:meth:`without_tta`) drops the gammas."""
    from kidneyseg.inference.predict import predict_labels
    from kidneyseg.inference.settings import InferenceConfig
    from kidneyseg.preprocess import zscore_percentile
    from kidneyseg.preprocess.normalise import gamma_zscore

    arr, kidney, spacing, _ = _coronal_body_phantom(60, 40)
    shape = arr.shape
    image = Image(arr, np.diag(list(spacing) + [1.0]))
    cfg = TrainConfig(recipe="multiplane", context_slices=0, target_spacing_mm=1.5)
    cpu = torch.device("cpu")

    one = _PlaneProbe()
    plain = predict_multiplane(one, image, cfg, cpu)[2]
    assert torch.equal(predict_multiplane(_PlaneProbe(), image, cfg, cpu, InferenceConfig(tta_gamma=[1.0]))[2], plain)
    singles = [predict_multiplane(_PlaneProbe(), image, cfg, cpu, InferenceConfig(tta_gamma=[g]))[2] for g in (0.5, 1.0, 2.5)]
    # the probe thresholds the z-score, so another gamma moves what it calls kidney
    assert not torch.equal(singles[0], singles[1]) and not torch.equal(singles[2], singles[1])
    net = _PlaneProbe()
    labels, _, fused = predict_multiplane(net, image, cfg, cpu, InferenceConfig(tta_gamma=[0.5, 1.0, 2.5]))
    assert len(net.shapes) == 3 * len(one.shapes)  # every batch of passes once per gamma
    assert torch.allclose(fused, sum(singles) / 3, atol=1e-6) and labels.shape == shape

    # gamma_zscore: gamma 1 is zscore_percentile exactly; another gamma keeps the order of the
    # intensities, changes their spacing, and is z-scored
    assert np.array_equal(gamma_zscore(arr, 1.0), zscore_percentile(arr))
    g = gamma_zscore(arr, 2.0)
    assert g.dtype == np.float32 and abs(float(g.mean())) < 1e-4 and abs(float(g.std()) - 1) < 1e-3
    flat = arr.ravel()[:2000]
    order = np.argsort(flat, kind="stable")
    assert np.all(np.diff(gamma_zscore(flat, 2.0)[order]) >= -1e-6)
    assert not np.allclose(g, zscore_percentile(arr), atol=1e-2)
    with pytest.raises(ValueError, match="gamma"):
        gamma_zscore(arr, 0.0)
    with pytest.raises(ValueError, match="constant"):
        gamma_zscore(np.ones((4, 4, 4)), 2.0)

    # settings: validated, kept through JSON, dropped by --fast; refused by a non-multiplane model
    for bad in ([], [1.0, 1.0], [0.1], [1.0, 5.0], ["x"]):
        with pytest.raises(ValueError, match="tta_gamma"):
            InferenceConfig(tta_gamma=bad)
    s = InferenceConfig(tta_gamma=[0.67, 1, 1.5])
    assert s.tta_gamma == (0.67, 1.0, 1.5) and InferenceConfig.from_dict(s.to_dict()) == s
    assert s.without_tta().tta_gamma == (1.0,)
    with pytest.raises(ValueError, match="multiplane"):
        predict_labels(_PlaneProbe(), image, TrainConfig(), cpu, s)


class _LevelProbe(torch.nn.Module):
    """A stand-in network that calls kidney where the z-scored slice is above ``level``."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x):
        k = (x[:, :1] > self.level).float() * 20 - 10
        return torch.cat([-k, k, torch.full_like(k, -10), torch.full_like(k, -10)], 1)


def test_ensemble_members_run_one_by_one_give_the_fused_result_and_their_own_masks():
    """``predict_labels(..., with_members=True)`` on a softmax ensemble: the fused probability is
    the ensemble network's (mean softmax) up to float rounding, and each network's own kidney
    mask comes back; a single network gives none."""
    from kidneyseg.inference.predict import predict_labels
    from kidneyseg.models.store import SoftmaxEnsemble

    arr, kidney, spacing, _ = _coronal_body_phantom(60, 40)
    image = Image(arr, np.diag(list(spacing) + [1.0]))
    cfg = TrainConfig(recipe="multiplane", context_slices=0, target_spacing_mm=1.5)
    cpu = torch.device("cpu")
    pair = SoftmaxEnsemble([_LevelProbe(0.5), _LevelProbe(1.0e9)])  # the second network finds nothing
    labels, _, fused = predict_labels(pair, image, cfg, cpu, with_probability=True)
    labels_m, _, fused_m, members = predict_labels(pair, image, cfg, cpu, with_probability=True, with_members=True)
    assert np.allclose(fused, fused_m, atol=1e-6) and np.array_equal(labels, labels_m)
    assert len(members) == 2 and members[0].dtype == bool and members[0].shape == arr.shape
    single = predict_labels(_LevelProbe(0.5), image, cfg, cpu, with_probability=True, with_members=True)
    assert single[3] is None
    assert np.array_equal(members[0], single[0] == 1) and not members[1].any()
    # mean softmax at the argmax: 0.5 kidney where one of two networks says kidney -> ties go to background
    assert 0.49 < float(fused[kidney].mean()) < 0.51


def test_member_dice_per_side_of_the_midline():
    from kidneyseg.postprocess.quality import member_dice

    shape = (40, 10, 10)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # world x = 2 * i; the midline at x = 40 mm (i = 20)
    right = np.zeros(shape, bool)
    right[25:35, 3:7, 3:7] = True  # world x above the midline: the right side, as assign_kidneys names it
    left = np.zeros(shape, bool)
    left[5:15, 3:7, 3:7] = True
    both = right | left
    assert member_dice([both, both.copy()], affine, 40.0) == {"kidney_right": 1.0, "kidney_left": 1.0}
    d = member_dice([both, left], affine, 40.0)  # the second network misses the right kidney
    assert d == {"kidney_right": 0.0, "kidney_left": 1.0}
    half = left.copy()
    half[10:15] = False  # half the left kidney
    assert member_dice([both, right | half], affine, 40.0)["kidney_left"] == pytest.approx(2 * 80 / (160 + 80))
    empty = np.zeros(shape, bool)
    assert member_dice([empty, empty], affine, 40.0) == {"kidney_right": 1.0, "kidney_left": 1.0}
    three = member_dice([both, both, left], affine, 40.0)  # pairs: 1, 0, 0 on the right
    assert three["kidney_right"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="two or more"):
        member_dice([both], affine, 40.0)


def test_member_agreement_is_reported_and_leaves_the_flags_alone(shipped_pipeline, two_kidney_phantom):
    """``finish(..., member_kidney=...)`` (``MRKidneyPipeline.member_agreement``, used by
    ``benchmarks/mr_generalisation.py --member-agreement``) adds ``member_dice_right`` /
    ``member_dice_left``; ``low_confidence`` stays the uncertain fraction's alone (the agreement
    was not adopted as a flag: benchmarks/README.md, "QC from the two networks' agreement")."""
    from kidneyseg.inference import prepare
    from kidneyseg.io import to_canonical
    from kidneyseg.postprocess import body_midline_x_mm
    from kidneyseg.postprocess.quality import member_dice

    pipe = shipped_pipeline
    image, labels, affine = two_kidney_phantom
    img = Image(image, affine)
    cfg = pipe.bundle.config
    prepared = prepare(img, cfg.target_spacing_mm, cfg.clip_ratio, cfg.normalisation)
    canon = to_canonical(Image(labels, affine))[0].array > 0
    sure = np.where(canon, 0.99, 0.01).astype(np.float32)
    one_side = canon.copy()
    one_side[: canon.shape[0] // 2] = False  # the second network finds one kidney only
    r = pipe.finish(img, canon.astype(np.uint8), prepared, kidney_probability=sure, member_kidney=[canon, one_side])
    expected = member_dice([canon, one_side], prepared.canonical.affine,
                           body_midline_x_mm(prepared.canonical.array, prepared.canonical.affine))
    assert r.qc["member_dice_right"] == round(expected["kidney_right"], 3)
    assert r.qc["member_dice_left"] == round(expected["kidney_left"], 3)
    assert min(r.qc["member_dice_right"], r.qc["member_dice_left"]) == 0.0
    assert "low_confidence" not in r.qc or r.qc["low_confidence"] is False
    plain = pipe.finish(img, canon.astype(np.uint8), prepared, kidney_probability=sure)
    assert "member_dice_right" not in plain.qc
