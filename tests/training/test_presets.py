"""Paper presets (issue 26): `--preset paper` sets every value the seed paper states, each
checked here against the paper's own words (../shared/seeds/002: Zang et al., KiTS21)."""

from __future__ import annotations

import json

import numpy as np

from kidneyseg import cli_train
from kidneyseg.cli import _add_common
from kidneyseg.datasets.ct_phantom import write_kits_phantoms
from kidneyseg.pipelines.kits_unet3d import keep_kidney_components
from kidneyseg.specs.kits import PAPER, PAPER_PLAN, KitsConfig

from ..conftest import cli


def test_kits_paper_preset_is_what_seed_002_states():
    cfg = KitsConfig(**PAPER)
    assert cfg.iterations == 1000 * 250  # 2.5: 1000 epochs, one epoch = 250 batches
    assert (cfg.learning_rate, cfg.momentum) == (0.06, 0.99)  # 2.5: SGD, 0.06, 0.99 momentum, Nesterov
    assert cfg.foreground_patches == cfg.min_foreground_fraction == 1 / 3  # 2.5: one third foreground
    assert cfg.augment_probability == 0.4  # 2.2: probability 0.4 for each operation
    assert cfg.keep_components == 0 and cfg.mirror_tta is False  # 2.7: no further processing; 2.6
    assert PAPER_PLAN == {"normalisation": "case_percentile", "target_spacing_mm": (1.99, 1.99, 1.99),
                          "base_filters": 32}  # 2.2 and 2.3


def test_train_preset_then_config_then_flags(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"momentum": 0.9}))
    args = cli_train.build_parser("kits-unet3d", _add_common).parse_args(
        ["--dataset", str(tmp_path), "-o", str(tmp_path / "m"), "--preset", "paper", "--config", str(tmp_path / "cfg.json"),
         "--iterations", "10"])
    cfg = cli_train.config_from_args("kits-unet3d", args)
    assert cfg.iterations == 10 and cfg.momentum == 0.9 and cfg.keep_components == 0 and cfg.learning_rate == 0.06


def test_keep_components_zero_is_no_post_processing():
    km = np.zeros((20, 20, 20), bool)
    km[2:8, 2:8, 2:8] = True
    km[12:18, 12:18, 12:18] = True
    km[10, 2, 2] = True  # a stray voxel
    assert keep_kidney_components(km, 0) is km
    assert not keep_kidney_components(km, 2)[10, 2, 2]


def test_plan_preset_paper_sets_normalisation_spacing_and_filters(tmp_path):
    data = write_kits_phantoms(tmp_path / "kits", [0, 1], spacings=((3.0, 3.0, 4.0),))
    r = cli("plan", data, "-o", tmp_path / "plan.json", "--preset", "paper", "--memory-gb", "1.5", "--quiet")
    assert r.returncode == 0, r.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())["plan"]
    assert plan["normalisation"] == "case_percentile" and plan["target_spacing_mm"] == [1.99, 1.99, 1.99]
    assert plan["filters"][0] == 32
