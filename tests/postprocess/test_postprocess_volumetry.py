"""Left/right assignment in world coordinates, component filtering, volumes in mL."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.io import Image, to_canonical
from kidneyseg.labels import MR_KIDNEYS
from kidneyseg.metrics import dice
from kidneyseg.postprocess import assign_kidneys
from kidneyseg.postprocess.kidneys import split_at_necks
from kidneyseg.volumetry import label_volumes_ml, touches_border

from ..conftest import ellipsoid


def test_two_components_named_by_world_x(two_kidney_phantom):
    _, labels, affine = two_kidney_phantom
    swapped = np.where(labels == 1, 2, np.where(labels == 2, 1, 0)).astype(np.uint8)  # network confused sides
    res = assign_kidneys(swapped, affine, MR_KIDNEYS)
    assert res.kidney_count == 2 and res.laterality_source == "world_x"
    assert np.array_equal(res.labels, labels)
    assert res.network_agreement == 0.0
    assert res.centroids_world_mm["kidney_right"][0] > res.centroids_world_mm["kidney_left"][0]


@pytest.mark.parametrize("flip_axes", [(), (0,), (1,), (0, 2), (0, 1, 2)])
def test_laterality_follows_affine_not_array_index(two_kidney_phantom, flip_axes):
    """Flip the array AND the affine (same anatomy, stored differently): the kidney at
    larger world x must stay 'right' however the array is ordered."""
    _, labels, affine = two_kidney_phantom
    arr, aff = labels.copy(), affine.copy()
    for ax in flip_axes:
        arr = np.flip(arr, ax)
        flip = np.eye(4)
        flip[ax, ax] = -1
        flip[ax, 3] = labels.shape[ax] - 1
        aff = aff @ flip
    res = assign_kidneys(arr, aff, MR_KIDNEYS)
    assert np.array_equal(res.labels, arr)


def test_small_components_removed_and_single_component_keeps_network_labels(two_kidney_phantom):
    _, labels, affine = two_kidney_phantom
    noisy = labels.copy()
    noisy[0:2, 0:2, 0:2] = 1  # speck far from both kidneys
    res = assign_kidneys(noisy, affine, MR_KIDNEYS)
    assert res.removed_voxels == 8 and np.array_equal(res.labels, labels)
    only_right = np.where(labels == 1, 1, 0).astype(np.uint8)
    res1 = assign_kidneys(only_right, affine, MR_KIDNEYS)
    assert res1.kidney_count == 1 and res1.laterality_source == "network"
    assert np.array_equal(res1.labels, only_right)
    empty = assign_kidneys(np.zeros_like(labels), affine, MR_KIDNEYS)
    assert empty.kidney_count == 0 and not empty.labels.any()


def test_keep_all_components_keeps_speck(two_kidney_phantom):
    _, labels, affine = two_kidney_phantom
    noisy = labels.copy()
    noisy[0:2, 0:2, 0:2] = 1
    res = assign_kidneys(noisy, affine, MR_KIDNEYS, keep_largest=False)
    assert res.removed_voxels == 0 and (res.labels > 0).sum() == (noisy > 0).sum()


def test_ellipsoid_volume_in_ml_at_anisotropic_spacing():
    spacing = (0.8, 0.8, 2.5)
    radii = (30.0, 20.0, 55.0)  # mm: 4/3 pi abc = 138.2 mL, kidney-sized
    shape = (100, 70, 60)
    mask = ellipsoid(shape, spacing, (40, 28, 75), radii).astype(np.uint8)
    img = Image(mask, np.diag(list(spacing) + [1.0]))
    vol = label_volumes_ml(img, {1: "kidney"})["kidney_ml"]
    expected = 4 / 3 * np.pi * np.prod(radii) / 1000
    assert abs(vol - expected) / expected < 0.01
    # an oblique, flipped affine with the same spacing gives the same volume
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, -1]]) @ np.diag(spacing)
    aff = np.eye(4)
    aff[:3, :3] = rot
    assert label_volumes_ml(Image(mask, aff), {1: "kidney"})["kidney_ml"] == pytest.approx(vol)


def test_touches_border():
    m = np.zeros((5, 5, 5), np.uint8)
    m[2, 2, 2] = 1
    assert not touches_border(m)
    m[2, 2, 4] = 1
    assert touches_border(m)


def test_dice_empty_rules():
    z = np.zeros((3, 3), bool)
    o = z.copy()
    o[1, 1] = True
    assert dice(z, z) == 1.0
    assert dice(o, z) == 0.0 and dice(z, o) == 0.0
    assert dice(o, o) == 1.0
    with pytest.raises(ValueError):
        dice(z, np.zeros((3, 4), bool))


def test_phantom_world_x_matches_canonical_axis(two_kidney_phantom):
    """Sanity of the convention: in a RAS canonical array, the right kidney has larger index on axis 0."""
    _, labels, affine = two_kidney_phantom
    can, _ = to_canonical(Image(labels, affine))
    xs_right = np.argwhere(can.array == 1)[:, 0].mean()
    xs_left = np.argwhere(can.array == 2)[:, 0].mean()
    assert xs_right > xs_left


def test_single_component_placed_or_split_by_midline(two_kidney_phantom):
    _, labels, affine = two_kidney_phantom
    from kidneyseg.postprocess import body_midline_x_mm

    solitary = (labels == 2).astype(np.uint8)  # one "kidney" class, on the patient's left
    res = assign_kidneys(solitary, affine, MR_KIDNEYS, midline_x_mm=0.0)
    assert res.laterality_source == "midline" and res.kidney_count == 1
    assert np.array_equal(res.labels, solitary * 2)
    horseshoe = (labels > 0).astype(np.uint8)
    horseshoe[30:70, 28:36, 8:12] = 1  # isthmus joining both kidneys across the midline
    res = assign_kidneys(horseshoe, affine, MR_KIDNEYS, midline_x_mm=0.0)
    assert res.kidney_count == 1
    x_world = np.arange(labels.shape[0]) * affine[0, 0] + affine[0, 3]
    assert (res.labels[x_world > 0] != 2).all() and (res.labels[x_world < 0] != 1).all()
    image = np.zeros(labels.shape, np.float32)
    image[20:90, 10:50, :] = 100.0  # a body box centred at index 54.5 -> x = 9.75 mm
    assert body_midline_x_mm(image, affine) == pytest.approx(54.5 * 1.5 - 72.0)


def test_laterality_conflict_flag(two_kidney_phantom):
    """Two components on one side of the body midline (as when a cyst is taken for a kidney)
    are still named by world x, but flagged; two kidneys either side are not."""
    _, labels, affine = two_kidney_phantom
    fg = (labels > 0).astype(np.uint8)
    xs = [float((affine[:3, :3] @ np.argwhere(labels == v).mean(0) + affine[:3, 3])[0]) for v in (1, 2)]
    between = sum(xs) / 2
    assert not assign_kidneys(fg, affine, MR_KIDNEYS, midline_x_mm=between).laterality_conflict
    res = assign_kidneys(fg, affine, MR_KIDNEYS, midline_x_mm=min(xs) - 50.0)
    assert res.laterality_conflict and res.kidney_count == 2
    assert np.count_nonzero(res.labels == 1) == np.count_nonzero(labels == 1)  # naming itself unchanged


def test_second_kidney_is_taken_from_the_other_side_of_the_midline(two_kidney_phantom):
    """CHAOS case 36 under the fold-2 model: a false positive beside the left kidney is larger
    than the partly found right kidney. The two largest components lie left of the midline;
    the kept pair must be the largest plus the largest on the other side."""
    _, labels, affine = two_kidney_phantom
    fg = (labels > 0).astype(np.uint8)
    xs = [float((affine[:3, :3] @ np.argwhere(labels == v).mean(0) + affine[:3, 3])[0]) for v in (1, 2)]
    midline = sum(xs) / 2
    right = labels == 1
    fg[right & (np.arange(labels.shape[2]) >= 12)[None, None, :]] = 0  # right kidney half found
    blob = np.zeros_like(fg)
    blob[2:12, 23:41, 4:16] = 1  # a false positive at the far left (small x), apart from the left kidney
    assert not (blob.astype(bool) & (labels > 0)).any()
    fg[blob > 0] = 1
    assert (labels == 2).sum() > blob.sum() > (right & (fg > 0)).sum()  # left kidney > blob > partial right
    res = assign_kidneys(fg, affine, MR_KIDNEYS, midline_x_mm=midline)
    assert not res.laterality_conflict and res.kidney_count == 2
    assert np.array_equal(res.labels == 1, right & (fg > 0))  # the partial right kidney is kept and named right
    assert np.array_equal(res.labels == 2, labels == 2)  # the left kidney, not the blob
    # without a midline nothing tells the sides apart: the two largest are kept, as before
    plain = assign_kidneys(fg, affine, MR_KIDNEYS)
    assert not (plain.labels[right] > 0).any()
    # an opposite component below min_second_fraction is noise: the same-side pair stays, flagged
    tiny = fg.copy()
    tiny[right & (np.arange(labels.shape[2]) >= 2)[None, None, :]] = 0
    res2 = assign_kidneys(tiny, affine, MR_KIDNEYS, midline_x_mm=midline, min_second_fraction=0.5)
    assert res2.laterality_conflict


def test_core_ranking_keeps_a_solid_kidney_over_a_larger_thin_rim():
    """CHAOS case 36 under the seed-1 fold-2 model: a thin rim along a large cyst outgrew the
    left kidney on the same side, so "largest" kept the rim. Ranked by core (voxels >= 5 mm
    inside), the kidney wins; ranked by voxel count, the rim does."""
    shape, spacing = (100, 80, 16), (1.25, 1.25, 5.0)
    affine = np.diag([*spacing, 1.0])  # RAS: larger x is the patient's right
    right = ellipsoid(shape, spacing, (100.0, 50.0, 40.0), (10.0, 10.0, 20.0))
    left = ellipsoid(shape, spacing, (30.0, 50.0, 40.0), (10.0, 10.0, 20.0))
    rim = np.zeros(shape, bool)
    rim[2:5, 5:75, 1:15] = True  # 3.75 mm thick, at the far left, apart from the left kidney
    assert rim.sum() > 2 * left.sum() and not (rim & left).any()
    fg = (right | left | rim).astype(np.uint8)
    by_core = assign_kidneys(fg, affine, MR_KIDNEYS, midline_x_mm=62.5, core_depth_mm=5.0)
    assert np.array_equal(by_core.labels == 1, right) and np.array_equal(by_core.labels == 2, left)
    assert by_core.removed_voxels == rim.sum()
    by_size = assign_kidneys(fg, affine, MR_KIDNEYS, midline_x_mm=62.5)
    assert np.array_equal(by_size.labels == 2, rim) and np.array_equal(by_size.labels == 1, right)
    # depth is in mm: on 0.5 mm voxels the same arrays are 2.5 times smaller, the kidneys'
    # in-plane radius 4 mm, so nothing has a 5 mm core and voxel count decides again (the rim)
    fine = np.diag([0.5, 0.5, 5.0, 1.0])
    assert np.array_equal(assign_kidneys(fg, fine, MR_KIDNEYS, midline_x_mm=25.0, core_depth_mm=5.0).labels == 2, rim)
    assert np.array_equal(assign_kidneys(fg, fine, MR_KIDNEYS, midline_x_mm=25.0, core_depth_mm=2.0).labels == 2, left)


def test_ct_side_volumes_use_the_affine_determinant_on_a_sheared_grid():
    """kits-unet3d and c2f-cascade report per-side volumes through volumetry: on a sheared
    grid the voxel volume is |det(A)|, not the product of the column lengths (spacing_mm)."""
    from kidneyseg.io import Image
    from kidneyseg.pipelines.result import side_volumes_ml

    affine = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0, 0, 0, 1]])
    sides = np.zeros((10, 10, 10), np.uint8)
    sides[:5, :, :] = 1
    sides[5:7, :, :] = 2
    canon = Image(np.zeros(sides.shape, np.float32), affine)
    vols = side_volumes_ml(canon, sides)
    det_ml = abs(np.linalg.det(affine[:3, :3])) / 1000  # 2.0 mm^3 per voxel
    assert vols == {"kidney_right_ml": 500 * det_ml, "kidney_left_ml": 200 * det_ml}
    assert np.prod(canon.spacing_mm) / 1000 != det_ml  # the old product of spacings would differ


def test_kidney_length_is_pole_to_pole_along_the_principal_axis_on_any_grid():
    """An ellipsoid 110 mm long (semi-axes 25, 20, 55 mm) on 1 mm voxels: the bipolar length is
    110 mm within a voxel, also when the grid is rotated 30 degrees and anisotropic."""
    from kidneyseg.io import Image
    from kidneyseg.volumetry import kidney_length_mm, kidney_measures

    from ..conftest import ellipsoid

    m = ellipsoid((70, 60, 130), (1.0, 1.0, 1.0), (35, 30, 65), (25, 20, 55))
    assert abs(kidney_length_mm(m, np.eye(4)) - 110.0) <= 1.0
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rot = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    aniso = ellipsoid((70, 60, 44), (1.0, 1.0, 3.0), (35, 30, 66), (25, 20, 55))
    assert abs(kidney_length_mm(aniso, rot @ np.diag([1.0, 1.0, 3.0, 1.0])) - 110.0) <= 3.0  # one 3 mm voxel
    labels = np.zeros((70, 60, 130), np.uint8)
    labels[m] = 1
    labels[:5, :5, :5] = 2
    out = kidney_measures(Image(labels, np.eye(4)), {1: "kidney_right", 2: "kidney_left"})
    assert out["split_right_pct"] == round(100 * m.sum() / (m.sum() + 125), 1)
    assert set(out) == {"kidney_right_length_mm", "kidney_left_length_mm", "split_right_pct"}
    assert kidney_measures(Image(labels, np.eye(4)), {1: "kidney", 2: "tumor"}) == {}


def _kidneys_and_spleen_bridge():
    """RAS grid at (2, 2, 4) mm: two ellipsoid kidneys, and a spleen-sized ellipsoid above and
    left of the left kidney joined to it by a bridge 4 mm x 4 mm thick (the philips_01 failure)."""
    shape, spacing = (90, 70, 40), (2.0, 2.0, 4.0)
    affine = np.diag([*spacing, 1.0])
    right = ellipsoid(shape, spacing, (140.0, 70.0, 60.0), (25.0, 20.0, 50.0))
    left = ellipsoid(shape, spacing, (40.0, 70.0, 60.0), (25.0, 20.0, 50.0))
    spleen = ellipsoid(shape, spacing, (30.0, 70.0, 135.0), (22.0, 22.0, 20.0))
    bridge = np.zeros(shape, bool)
    bridge[19:21, 34:36, 25:31] = True  # x 38-40 mm, y 68-70 mm, z 100-120 mm: from the left pole into the spleen
    assert not (spleen & left).any()
    return affine, right, left, spleen, bridge


def test_split_at_necks_cuts_a_bridge_and_leaves_compact_shapes_whole():
    affine, right, left, spleen, bridge = _kidneys_and_spleen_bridge()
    joined = left | spleen | bridge
    assert ndimage_components(joined) == 1
    regions = split_at_necks(joined | right, affine, depth_mm=8.0)
    assert regions.dtype == np.int32 and set(np.unique(regions)) == {0, 1, 2, 3}
    assert np.unique(regions[left]).size == 1 and np.unique(regions[spleen]).size == 1
    assert regions[left][0] != regions[spleen][0] != regions[right][0]
    # a shape without a core (thinner than 2 x depth everywhere) stays one region
    thin = np.zeros(right.shape, bool)
    thin[10:60, 10:12, 5:20] = True
    assert set(np.unique(split_at_necks(thin, affine, 8.0))) == {0, 1}
    assert not split_at_necks(np.zeros((4, 4, 4), bool), affine, 8.0).any()
    with pytest.raises(ValueError, match="depth_mm"):
        split_at_necks(thin, affine, 0.0)


def test_neck_split_drops_a_joined_organ_and_probability_ranking_keeps_the_kidney():
    """Without the split the spleen stays with the left kidney; with it the spleen is a region
    of its own, dropped. When the spleen region has the deeper core, core ranking keeps it over
    the left kidney (and names it left), while ranking by summed kidney probability keeps the
    kidney, which the network was surer of."""
    affine, right, left, spleen, bridge = _kidneys_and_spleen_bridge()
    fg = (right | left | spleen | bridge).astype(np.uint8)
    midline = 90.0
    whole = assign_kidneys(fg, affine, MR_KIDNEYS, midline_x_mm=midline, core_depth_mm=5.0)
    assert (whole.labels[spleen] == 2).all()
    regions = split_at_necks(fg > 0, affine, 8.0)
    split = assign_kidneys(fg, affine, MR_KIDNEYS, midline_x_mm=midline, core_depth_mm=5.0, regions=regions)
    assert np.array_equal(split.labels == 1, right) and (split.labels[left] == 2).all()
    assert not (split.labels[spleen] > 0).any() and split.removed_voxels >= spleen.sum()
    # a bigger spleen: more core than the left kidney
    big = ellipsoid(fg.shape, (2.0, 2.0, 4.0), (40.0, 70.0, 136.0), (40.0, 40.0, 21.0)) & ~left
    fg2 = (right | left | big | bridge).astype(np.uint8)
    regions2 = split_at_necks(fg2 > 0, affine, 8.0)
    by_core = assign_kidneys(fg2, affine, MR_KIDNEYS, midline_x_mm=midline, core_depth_mm=5.0, regions=regions2)
    assert (by_core.labels[big] == 2).mean() > 0.95 and not (by_core.labels[left] > 0).any()
    probability = np.where(right | left, 0.95, 0.0) + np.where(big | bridge, 0.4, 0.0)
    by_mass = assign_kidneys(fg2, affine, MR_KIDNEYS, midline_x_mm=midline, core_depth_mm=5.0, regions=regions2,
                             rank_weights=probability)
    assert np.array_equal(by_mass.labels == 1, right) and (by_mass.labels[left] == 2).all()
    assert not (by_mass.labels[big] > 0).any()
    with pytest.raises(ValueError, match="regions shape"):
        assign_kidneys(fg, affine, MR_KIDNEYS, regions=regions[:-1])


def ndimage_components(mask) -> int:
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3, 3), bool))[1]
