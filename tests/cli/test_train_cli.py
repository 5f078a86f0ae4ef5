"""`kidneyseg train <method>`: each method's config fields are its flags, anything else is
refused with exit 2, and --config / flags / subcommand defaults combine in that order."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kidneyseg import cli_train
from kidneyseg.cli import _add_common

from ..conftest import cli


@pytest.mark.parametrize("name", list(cli_train.METHODS))
def test_every_config_field_is_a_flag(name):
    method = cli_train.METHODS[name]
    parser = cli_train.build_parser(name, _add_common)
    flags = {o for a in parser._actions for o in a.option_strings}
    skip = set(method.fixed) | ({"dataset", "layout"} if name.startswith("mr-") else set())
    for f in dataclasses.fields(method.config_class()):
        if f.name not in skip:
            assert "--" + f.name.replace("_", "-") in flags, f"{name}: no flag for {f.name}"


@pytest.mark.parametrize("name, flag", [("kits-unet3d", "--batch-size"), ("c2f-cascade", "--fold"),
                                        ("us-ensemble", "--exclude"), ("mr-t2-unet", "--epochs")])
def test_a_flag_the_method_does_not_have_is_refused(tmp_path, name, flag):
    r = cli("train", name, "--dataset", tmp_path, "-o", tmp_path / "m", flag, "2")
    assert r.returncode == 2 and f"unrecognized arguments: {flag}" in r.stderr
    assert not (tmp_path / "m").exists()


def test_flags_override_config_which_overrides_the_subcommand_defaults(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"iterations": 7, "learning_rate": 0.01, "recipe": "multiplane"}))
    parser = cli_train.build_parser("mr-multiprotocol-unet", _add_common)
    args = parser.parse_args(["--dataset", str(tmp_path), "-o", str(tmp_path / "m"), "--config", str(tmp_path / "cfg.json"),
                              "--iterations", "9", "--no-merge-sides", "--patch-size", "64", "64",
                              "--plane-weights", '{"axial": 1, "coronal": 2, "sagittal": 0}'])
    cfg = cli_train.config_from_args("mr-multiprotocol-unet", args)
    assert cfg.iterations == 9 and cfg.learning_rate == 0.01 and cfg.recipe == "multiplane"
    assert cfg.context_slices == 0 and cfg.merge_sides is False and cfg.patch_size == (64, 64)
    assert cfg.plane_weights == {"axial": 1.0, "coronal": 2.0, "sagittal": 0.0} and cfg.dataset == str(tmp_path)


def test_an_invalid_value_is_one_line_naming_the_field(tmp_path):
    r = cli("train", "kits-unet3d", "--dataset", tmp_path, "-o", tmp_path / "m", "--iterations", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "iterations" in r.stderr
    (tmp_path / "cfg.json").write_text(json.dumps({"no_such_field": 1}))
    r = cli("train", "em-unet3d", "--dataset", tmp_path, "-o", tmp_path / "m", "--config", tmp_path / "cfg.json")
    assert r.returncode == 2 and "no_such_field" in r.stderr


@pytest.mark.parametrize("argv, want", [
    ([], None), (["--fold", "all"], None), (["--fold", "2"], 2), (["--cross-validate"], "cv")])
def test_fold_flags_have_nnunet_meanings(argv, want):
    """--fold all is one model on all cases (nnU-Net); --cross-validate is every fold, then
    the model on all cases (kidneyseg's --fold all until 2026-12-03)."""
    from kidneyseg import cli_train

    parser = cli_train.build_parser("mr-t2-unet", lambda p: None)
    args = parser.parse_args(["--dataset", "d", "-o", "o", *argv])
    assert cli_train.fold_choice(args) == want


@pytest.mark.parametrize("method, argv, match", [
    ("mr-t2-unet", ["--fold", "1", "--cross-validate"], "give one"),
    ("mr-t2-unet", ["--fold", "x"], "fold index"),
    ("em-unet3d", ["--fold", "1"], "all folds or none")])
def test_fold_flag_conflicts_are_refused(method, argv, match):
    from kidneyseg import cli_train
    from kidneyseg.errors import InputError

    args = cli_train.build_parser(method, lambda p: None).parse_args(["--dataset", "d", "-o", "o", *argv])
    with pytest.raises(InputError, match=match):
        cli_train.fold_choice(args, single_folds=method != "em-unet3d")


@pytest.mark.parametrize("pipeline, flag, value", [("kits-unet3d", "--batch-size", "2"), ("c2f-cascade", "--epochs", "3"),
                                                   ("us-ensemble", "--exclude", "a"), ("mr-t2-unet", "--plan", "p.json")])
def test_legacy_train_form_refuses_a_flag_the_method_does_not_use(tmp_path, pipeline, flag, value):
    """`kidneyseg train --pipeline NAME` goes through `kidneyseg train NAME`; a flag that the
    method would ignore stops it with one line, before any data is read."""
    r = cli("train", "--pipeline", pipeline, "--dataset", tmp_path, "-o", tmp_path / "m", flag, value)
    assert r.returncode == 2 and f"{flag}: not used by {pipeline}" in r.stderr, r.stderr
    assert not (tmp_path / "m").exists()
