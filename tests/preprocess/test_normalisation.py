"""Body-referenced MR normalisation: body median, clip, training fingerprint, config, model path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kidneyseg.errors import InputError
from kidneyseg.inference.predict import prepare
from kidneyseg.io import Image
from kidneyseg.preprocess import zscore_percentile
from kidneyseg.preprocess.normalise import body_median, body_ratio, clip_body_ratio, foreground_body_ratio
from kidneyseg.specs.mr_unet import TrainConfig
from kidneyseg.training.trainer import fit_normalisation, select_cases, train
from kidneyseg.validation import validate_mr

from ..conftest import ellipsoid
from ..training.test_training import TINY


def body_phantom(cyst_radius_mm: float = 0.0, seed: int = 0):
    """(image, kidney mask): air (noise ~5), a body of tissue at 200, kidneys at 700
    (3.5 x the body), and optionally a 'cyst' at 2000 (10 x) of the given radius."""
    shape, spacing = (80, 64, 24), (2.0, 2.0, 4.0)
    rng = np.random.default_rng(seed)
    image = np.abs(rng.normal(0, 5, shape)).astype(np.float32)
    body = ellipsoid(shape, spacing, (80, 64, 48), (70, 55, 60))
    kidneys = ellipsoid(shape, spacing, (50, 50, 48), (12, 10, 30)) | ellipsoid(shape, spacing, (110, 50, 48), (12, 10, 30))
    image[body] = 200 + rng.normal(0, 10, int(body.sum()))
    image[kidneys] = 700 + rng.normal(0, 20, int(kidneys.sum()))
    if cyst_radius_mm:
        cyst = ellipsoid(shape, spacing, (80, 90, 48), (cyst_radius_mm,) * 3)
        image[cyst] = 2000
    return image, kidneys


def test_body_median_ignores_air_and_a_bright_cyst():
    image, _ = body_phantom(cyst_radius_mm=20)
    m = body_median(image)
    assert 195 < m < 215  # the tissue, not the noise (~5), the kidneys (700) or the cyst (2000)
    assert abs(body_median(image * 3.0) - 3 * m) < 1e-3 * m  # a scanner gain scales it exactly


def test_clip_body_ratio_clips_cyst_not_kidney_and_leaves_input():
    image, kidneys = body_phantom(cyst_radius_mm=20)
    before = image.copy()
    out = clip_body_ratio(image, 4.5)
    assert np.array_equal(image, before)  # input untouched
    m = body_median(image)
    assert out.dtype == np.float32 and out.max() == pytest.approx(4.5 * m, rel=1e-5)
    assert np.array_equal(out[kidneys], image[kidneys])  # kidneys (3.5 x) are below the clip
    with pytest.raises(ValueError, match="ratio"):
        clip_body_ratio(image, 0.0)
    with pytest.raises(ValueError, match="positive"):
        body_median(np.zeros((4, 4, 4), np.float32))
    binary = (image > 500).astype(np.float32)  # a mask given as an image: one positive value
    assert body_median(binary) == 1.0 and np.array_equal(clip_body_ratio(binary, 4.5), binary)


def test_clip_restores_kidney_contrast_that_a_cyst_takes():
    """The failure it is for (CHAOS case 36): a cyst at the top of the histogram lowers the
    kidneys' z-score; the body-referenced clip gives most of it back (the clipped cyst still
    weighs on the mean and std, so not all)."""
    plain, kidneys = body_phantom()
    cystic, _ = body_phantom(cyst_radius_mm=20)
    z_plain = float(zscore_percentile(plain)[kidneys].mean())
    z_cyst = float(zscore_percentile(cystic)[kidneys].mean())
    z_clip = float(zscore_percentile(clip_body_ratio(cystic, 4.0))[kidneys].mean())
    assert z_cyst < 0.6 * z_plain  # the cyst takes the kidneys' contrast ...
    assert z_clip - z_cyst > 0.5 * (z_plain - z_cyst)  # ... the clip gives more than half of it back


def test_body_ratio_is_gain_free_and_a_cyst_does_not_move_the_kidneys():
    """Where the clip + z-score still loses contrast to a cyst (through the std), the body
    ratio does not: the kidneys keep their value, 700 / 200 - 1 = 2.5."""
    plain, kidneys = body_phantom()
    cystic, _ = body_phantom(cyst_radius_mm=20)
    before = cystic.copy()
    out = body_ratio(cystic, 4.0)
    assert np.array_equal(cystic, before) and out.dtype == np.float32  # input untouched
    assert out.max() == pytest.approx(3.0, abs=1e-5)  # the cyst (10 x) clipped at 4 x, minus 1
    k_plain, k_cyst = float(body_ratio(plain, 4.0)[kidneys].mean()), float(out[kidneys].mean())
    assert 2.3 < k_plain < 2.7 and abs(k_cyst - k_plain) < 0.05
    z_plain = float(zscore_percentile(clip_body_ratio(plain, 4.0))[kidneys].mean())
    z_cyst = float(zscore_percentile(clip_body_ratio(cystic, 4.0))[kidneys].mean())
    assert z_plain - z_cyst > 0.1 * z_plain  # the z-score, clipped or not, still moves
    assert np.allclose(body_ratio(cystic * 3.0, 4.0), out, atol=1e-5)  # scanner gain
    with pytest.raises(ValueError, match="ratio"):
        body_ratio(cystic, -1.0)


def test_foreground_body_ratio_pools_training_kidneys():
    a, ka = body_phantom(seed=1)
    b, kb = body_phantom(seed=2)
    ratio = foreground_body_ratio([(a, ka), (b * 2.0, kb)])  # the ratio is gain-free
    assert 3.6 < ratio < 3.9  # kidneys 700 +- 20 over a body of 200: 99.5th pct ~ (700 + 2.6*20)/200
    with pytest.raises(ValueError, match="foreground"):
        foreground_body_ratio([(a, np.zeros_like(ka))])


def test_config_normalisation_fields_and_old_configs():
    old = TrainConfig().to_dict()
    for key in ("normalisation", "body_clip_ratio"):
        old.pop(key)
    cfg = TrainConfig.from_dict(old)  # a model folder made before the option loads unchanged
    assert cfg.normalisation == "percentile_zscore" and cfg.clip_ratio is None
    with pytest.raises(ValueError, match="body_clip_ratio is not set"):
        _ = TrainConfig(normalisation="body_clip_zscore").clip_ratio
    assert TrainConfig(normalisation="body_clip_zscore", body_clip_ratio=4.5).clip_ratio == 4.5
    with pytest.raises(ValueError, match="body_ratio: body_clip_ratio is not set"):
        _ = TrainConfig(normalisation="body_ratio").clip_ratio
    assert TrainConfig(normalisation="body_ratio", body_clip_ratio=4.5).clip_ratio == 4.5
    with pytest.raises(ValueError, match="normalisation"):
        TrainConfig(normalisation="minmax")
    with pytest.raises(ValueError, match="body_clip_ratio"):
        TrainConfig(normalisation="body_clip_zscore", body_clip_ratio=-1.0)


def test_prepare_applies_the_clip_and_names_the_file_on_failure():
    image, _ = body_phantom(cyst_radius_mm=20)
    img = Image(image, np.diag([2.0, 2.0, 4.0, 1.0]), source="cyst.nii.gz")
    plain = prepare(img, 2.0).volume
    clipped = prepare(img, 2.0, body_clip_ratio=4.0).volume
    assert np.allclose(clipped, zscore_percentile(clip_body_ratio(image, 4.0)), atol=1e-4)
    assert not np.allclose(plain, clipped)
    ratio = prepare(img, 2.0, body_clip_ratio=4.0, normalisation="body_ratio").volume
    assert np.allclose(ratio, body_ratio(image, 4.0), atol=1e-5)
    with pytest.raises(ValueError, match="needs body_clip_ratio"):
        prepare(img, 2.0, normalisation="body_ratio")
    negative = Image(-np.abs(image) - 1, img.affine, source="negative.nii.gz")
    for scheme in ("body_clip_zscore", "body_ratio"):
        with pytest.raises(InputError, match="negative.nii.gz: body_median"):
            prepare(negative, 2.0, body_clip_ratio=4.0, normalisation=scheme)


def test_training_fits_the_ratio_on_training_cases_only(nnunet_dataset, tmp_path):
    cfg = TrainConfig(dataset=str(nnunet_dataset), layout="nnunet", target_spacing_mm=1.5,
                      normalisation="body_clip_zscore", **{**TINY, "fold": 0})
    train_cases, val_cases = select_cases(cfg)
    fitted = fit_normalisation(cfg, train_cases)
    assert fitted.body_clip_ratio is not None and fitted.replace(body_clip_ratio=None) == cfg
    assert fit_normalisation(fitted, train_cases) is fitted  # a set ratio is kept
    assert fit_normalisation(TrainConfig(), train_cases).body_clip_ratio is None  # other schemes untouched
    as_ratio = fit_normalisation(cfg.replace(normalisation="body_ratio"), train_cases)
    assert as_ratio.body_clip_ratio == fitted.body_clip_ratio  # the same fingerprint
    out = train(cfg, tmp_path / "m", progress=False, validate=validate_mr)
    saved = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert saved.body_clip_ratio == fitted.body_clip_ratio  # what inference will apply
    assert {r["case"] for r in json.loads((out / "training_summary.json").read_text())["validation"]} == \
        {c.case_id for c in val_cases}


def test_one_percentile_zscore_for_mr_and_per_case_ct():
    """kits-unet3d's per-case normalisation is zscore_percentile itself: the same numbers on a
    real-looking volume, and zeros (not an error) on a constant one, where the MR path refuses."""
    from kidneyseg.planning import Plan
    from kidneyseg.specs.kits import normalise

    rng = np.random.default_rng(0)
    vol = rng.normal(40, 300, (16, 16, 8)).astype(np.float32)
    plan = Plan.__new__(Plan)
    object.__setattr__(plan, "normalisation", "case_percentile")
    np.testing.assert_array_equal(normalise(vol, plan), zscore_percentile(vol))
    flat = np.full((4, 4, 4), 7.0, np.float32)
    assert not normalise(flat, plan).any()
    with pytest.raises(ValueError, match="constant"):
        zscore_percentile(flat)
