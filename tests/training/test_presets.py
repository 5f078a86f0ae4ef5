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


def test_c2f_paper_preset_is_what_seed_004_states_and_the_default():
    from kidneyseg.specs.c2f import PAPER as C2F_PAPER
    from kidneyseg.specs.c2f import C2FConfig

    cfg = C2FConfig(**C2F_PAPER)
    assert cfg.spacing_mm == (0.7816, 0.7816, 3.0)  # 1.3: 3 x 0.7816 x 0.7816 mm
    assert (cfg.coarse_size, cfg.correction_size, cfg.fine_size) == (128, (256, 64), 160)  # 1.3
    # 1.3: 10000 voxels "roughly equal to 18 ml": 10000 x 0.7816^2 x 3 mm^3 = 18.3 mL
    assert round(10000 * 0.7816 ** 2 * 3.0 / 1000, 1) == cfg.kidney_threshold_ml
    assert cfg.tumour_box_margin == 30  # 2.4: "a frame with size 30"
    assert all(getattr(C2FConfig(), k) == getattr(cfg, k) for k in C2F_PAPER)  # the defaults are the paper's


def test_em_unet3d_paper_preset_is_what_seed_000_states(tmp_path):
    from kidneyseg.specs.em_unet import PAPER as EM_PAPER

    args = cli_train.build_parser("em-unet3d", _add_common).parse_args(
        ["--dataset", str(tmp_path), "-o", str(tmp_path / "m"), "--preset", "paper"])
    cfg = cli_train.config_from_args("em-unet3d", args)
    assert (cfg.em.n_classes, cfg.em.em_iterations, cfg.em.mrf_beta, cfg.em.margin_px) == (12, 7, 0.05, 5)  # II.B, II.D
    assert cfg.input_size == (64, 64, 16) and cfg.super_resolution == 5  # II.D, II.E
    assert cfg.channels == (16, 32, 64, 128)  # halved kernels of a 32-64-128-256 3D U-Net
    assert cfg.augment_histogram and cfg.augment_geometric  # II.C
    assert set(EM_PAPER) <= {f for f in cfg.to_dict()}
    # the paper's hand-picked class: --config merges into the preset's EM settings
    (tmp_path / "cfg.json").write_text(json.dumps({"em_class_choice": "manual", "em": {"class_ranks": [9, 9]}}))
    args = cli_train.build_parser("em-unet3d", _add_common).parse_args(
        ["--dataset", str(tmp_path), "-o", str(tmp_path / "m"), "--preset", "paper", "--config", str(tmp_path / "cfg.json")])
    cfg = cli_train.config_from_args("em-unet3d", args)
    assert cfg.em_class_choice == "manual" and cfg.em.class_ranks == (9, 9) and cfg.em.n_classes == 12


def test_em_manual_class_choice_keeps_the_given_classes(monkeypatch, tmp_path):
    """With em_class_choice "manual" training does not fit the localiser's classes: the
    config's class_ranks reach the saved model unchanged."""
    from kidneyseg.diffusion import fit_tensor
    from kidneyseg.datasets.dwi_phantom import make_dwi_phantom
    from kidneyseg.io import Image
    from kidneyseg.localize.em import EMConfig
    from kidneyseg.specs.em_unet import EMUNetConfig
    from kidneyseg.training import em_unet

    def refuse(*a, **k):
        raise AssertionError("fit_localiser called with a manual class choice")

    monkeypatch.setattr(em_unet, "fit_localiser", refuse)
    cases = []
    for seed in range(2):
        p = make_dwi_phantom(seed=20 + seed)
        m = fit_tensor(p.dwi)
        cases.append(em_unet.TrainCase(str(seed), Image(m.md, p.dwi.affine), p.kidneys > 0, Image(m.fa, p.dwi.affine)))
    config = EMUNetConfig(em=EMConfig(class_ranks=(7, 10), keep_components=1), em_class_choice="manual",
                          input_size=(16, 16, 8), channels=(4, 8), epochs=1, batch_size=2, augment_histogram=False,
                          augment_geometric=False)
    em_unet.train_em_unet(cases, config, tmp_path / "m", device="cpu", progress=False)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["em_class_choice"] == "manual" and saved["em"]["class_ranks"] == [7, 10]
    assert saved["em"]["keep_components"] == 1


def test_us_ensemble_paper_preset_is_what_seed_003_states(tmp_path):
    from kidneyseg.models.us_ensemble import SEED_003_MEMBERS

    args = cli_train.build_parser("us-ensemble", _add_common).parse_args(
        ["--dataset", str(tmp_path), "-o", str(tmp_path / "m"), "--preset", "paper"])
    cfg = cli_train.config_from_args("us-ensemble", args)
    # "DeepLabV3+ with ResNet-18, DeepLabV3+ with ResNet-152, and LinkNet"
    assert cfg.members == SEED_003_MEMBERS == ("deeplabv3plus_resnet18", "deeplabv3plus_resnet152", "linknet_resnet18")
    # "fine-tuning using the Adam optimization algorithm, with a learning rate set to 0.001 and a total of 100 epochs"
    assert (cfg.learning_rate, cfg.epochs, cfg.mode) == (1e-3, 100, "end-to-end")


def test_torchvision_imagenet_resnet_files_fit_the_encoders(tmp_path):
    """The files the preset's documentation names (torchvision's ImageNet ResNet state dicts,
    3-channel first convolution, with the classifier) load into the members' encoders."""
    import torch
    import torchvision

    from kidneyseg.models.us_ensemble import build_member

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    member = build_member("linknet_resnet18", encoder_weights=path)
    ref = torchvision.models.resnet18(weights=None)
    ref.load_state_dict(torch.load(path, weights_only=True))
    torch.testing.assert_close(member.encoder.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    torch.testing.assert_close(member.encoder.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))


def test_unsupervised_paper_preset_is_what_seed_001_states():
    from kidneyseg.pipelines import get_pipeline
    from kidneyseg.specs.unsupervised import UnsupervisedConfig, paper_config

    cfg = paper_config()
    c = cfg.cluster
    # section 3: N = 2 blocks of p = 50 channels, lambda = 5, epsilon = 0.005, SGD momentum 0.9, lr 0.01
    assert (c.n_blocks, c.channels, c.continuity_weight, c.epsilon, c.momentum, c.learning_rate) == (2, 50, 5.0, 0.005,
                                                                                                      0.9, 0.01)
    assert (cfg.n4_iterations, cfg.n4_fitting_levels) == (2, 8)  # section 3: N4, 2 iterations, 8 fitting levels
    assert cfg.method == "cluster3d" and c.spatial_dims == 3
    # native resolution, float32, no post-processing clamp: where the defaults depart for CPU time
    assert cfg.working_spacing_mm == 0 and c.precision == "float32" and cfg.clamp_to_seed is False
    default = UnsupervisedConfig()
    assert default.working_spacing_mm > 0 and default.clamp_to_seed
    pipe = get_pipeline("unsupervised-cluster", preset="paper", device="cpu")
    assert pipe.config == cfg


def test_segment_preset_is_checked_before_anything_is_read(tmp_path):
    r = cli("segment", tmp_path / "missing.nii.gz", "-o", tmp_path / "out", "--preset", "paper")
    assert r.returncode == 2 and "--preset paper: pipeline mr-auto has no such preset (presets: none)" in r.stderr
    r = cli("segment", tmp_path / "missing.nii.gz", "-o", tmp_path / "out", "--pipeline", "unsupervised-cluster",
            "--preset", "fast")
    assert r.returncode == 2 and "(presets: paper)" in r.stderr
    assert not (tmp_path / "out").exists()
