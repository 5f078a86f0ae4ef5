"""The command line as a user runs it: a real process on the bundled example, then bad input
(in-process through ``kidneyseg.cli.main``: the same exit codes and messages, without a torch import per command)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.api import example_dir
from kidneyseg.metrics import dice
from kidneyseg.models.store import default_model_dir

from ..conftest import UKAT, CliRun, cli, save_nifti, sha256

EXAMPLE = example_dir() / "image_39.nii.gz"
HAVE_MODEL = (default_model_dir() / "model.pt").exists()
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="shipped model not built yet")


def run(*args: str, cwd: Path | None = None) -> CliRun:
    """``kidneyseg ARGS`` in-process (a subprocess proves nothing more for these checks)."""
    return cli(*args, cwd=cwd)


def run_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m kidneyseg.cli ARGS`` as a real process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "kidneyseg.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """The bundled example through a real process: the console path end to end, once."""
    out = tmp_path_factory.mktemp("seg")
    before = sha256(EXAMPLE)
    proc = run_process("segment", str(EXAMPLE), "-o", str(out), "--device", "cpu", "--quiet")
    return proc, out, before


@needs_model
def test_segment_bundled_example_geometry_and_dice(example_run):
    proc, out, before = example_run
    assert proc.returncode == 0, proc.stderr
    assert sha256(EXAMPLE) == before  # input untouched
    seg = nib.load(out / "image_39_seg.nii.gz")
    src = nib.load(EXAMPLE)
    assert seg.shape == src.shape
    assert np.array_equal(seg.affine, src.affine)
    assert int(seg.header["qform_code"]) == int(src.header["qform_code"])
    assert int(seg.header["sform_code"]) == int(src.header["sform_code"])
    ref = np.asarray(nib.load(example_dir() / "label_39_kidneys.nii.gz").dataobj)
    pred = np.asarray(seg.dataobj)
    assert dice(pred == 1, ref == 1) >= 0.85  # 1 kidney_right
    labels = json.loads((out / "image_39_labels.json").read_text())
    assert labels == {"1": "kidney_right", "2": "kidney_left"}
    rows = json.loads((out / "volumes.json").read_text())
    assert rows[0]["case"] == "image_39" and rows[0]["kidney_count"] == 2 and rows[0]["empty"] is False
    vox_ml = abs(np.linalg.det(src.affine[:3, :3])) / 1000
    assert rows[0]["kidney_left_ml"] == round(float((pred == 2).sum() * vox_ml), 1)  # volumes.csv: 0.1 mL
    assert rows[0]["total_ml"] == round(float((pred > 0).sum() * vox_ml), 1)
    assert (out / "volumes.csv").read_text().startswith("case,kidney_right_ml,kidney_left_ml,total_ml")
    png = (out / "image_39_overlay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


@needs_model
def test_bundled_example_left_kidney_dice(example_run):
    """The left kidney on its own (0.863 for the body-median-clip model of 2026-12-01, 0.873
    for the 4000-iteration model before it; the 2000-iteration model scored 0.828 and this
    test was a strict xfail)."""
    _, out, _ = example_run
    pred = np.asarray(nib.load(out / "image_39_seg.nii.gz").dataobj)
    ref = np.asarray(nib.load(example_dir() / "label_39_kidneys.nii.gz").dataobj)
    assert dice(pred == 2, ref == 2) >= 0.85  # 2 kidney_left


@needs_model
def test_existing_outputs_not_overwritten(example_run):
    proc, out, _ = example_run
    stamp = sha256(out / "image_39_seg.nii.gz")
    again = run("segment", str(EXAMPLE), "-o", str(out), "--device", "cpu", "--quiet")
    assert again.returncode == 2
    assert "output exists" in again.stderr and "--overwrite" in again.stderr
    assert sha256(out / "image_39_seg.nii.gz") == stamp


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = np.random.default_rng(0).normal(100, 10, size=(48, 40, 12)).astype(np.float32)
    aff = np.diag([1.25, 1.25, 7.7, 1.0])
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp / "does_not_exist.nii.gz", "no such file")
    text = tmp / "text.nii.gz"
    text.write_text("hello\n" * 100)
    cases["not_an_image"] = (text, "not a readable NIfTI")
    full = save_nifti(good, aff, tmp / "full.nii.gz")
    trunc = tmp / "truncated.nii.gz"
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    cases["truncated"] = (trunc, "truncated|not a readable")
    cases["2d"] = (save_nifti(good[:, :, 0], aff, tmp / "flat.nii.gz"), "expected a 3D image, got 2D")
    cases["4d"] = (save_nifti(np.stack([good, good], -1), aff, tmp / "series.nii.gz"), "expected a 3D image, got 4D")
    cases["all_zero"] = (save_nifti(np.zeros_like(good), aff, tmp / "zeros.nii.gz"), "constant")
    nan = good.copy()
    nan[3, 4, 5] = np.nan
    cases["nan"] = (save_nifti(nan, aff, tmp / "nan.nii.gz"), "NaN or Inf")
    empty = tmp / "empty.nii.gz"
    empty.write_bytes(b"")
    cases["zero_bytes"] = (empty, "empty")
    wrong = tmp / "image.txt"
    wrong.write_bytes(gzip.compress(b"x"))
    cases["wrong_extension"] = (wrong, "unsupported file type")
    return cases


@needs_model
@pytest.mark.parametrize("kind", ["missing", "not_an_image", "truncated", "2d", "4d", "all_zero", "nan",
                                  "zero_bytes", "wrong_extension"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, kind):
    path, pattern = _bad_inputs(tmp_path)[kind]
    before = sha256(path) if path.exists() else None
    out = tmp_path / "out"
    proc = run("segment", str(path), "-o", str(out), "--device", "cpu", "--quiet")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(path) in lines[0]
    import re

    assert re.search(pattern, lines[0]), lines[0]
    if before is not None:
        assert sha256(path) == before
    assert not out.exists() or not any(out.iterdir())


@needs_model
@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_output_folder(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    proc = run("segment", str(EXAMPLE), "-o", str(out), "--quiet")
    assert proc.returncode == 2 and "not writable" in proc.stderr


def test_output_folder_that_cannot_be_created():
    out = Path("/proc/kidneyseg-cannot-write-here")
    proc = run("segment", str(EXAMPLE), "-o", str(out), "--quiet")
    assert proc.returncode == 2 and "not writable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_output_path_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    proc = run("segment", str(EXAMPLE), "-o", str(f), "--quiet")
    assert proc.returncode == 2 and "not a folder" in proc.stderr and f.read_text() == "keep me"


def test_unknown_pipeline_and_bad_model_folder(tmp_path):
    proc = run("segment", str(EXAMPLE), "-o", str(tmp_path / "o"), "--pipeline", "nope", "--quiet")
    assert proc.returncode == 2 and "unknown pipeline 'nope'" in proc.stderr
    proc = run("segment", str(EXAMPLE), "-o", str(tmp_path / "o2"), "--model", str(tmp_path), "--quiet")
    assert proc.returncode == 2 and "not a kidneyseg model folder for mr-t2-unet (missing config.json" in proc.stderr
    assert not list((tmp_path / "o2").glob("*"))


def test_list_models_and_info():
    proc = run("list-models")
    assert proc.returncode == 0 and "mr-auto (default)" in proc.stdout
    proc = run("info", str(EXAMPLE))
    assert proc.returncode == 0 and "orientation: LAS" in proc.stdout and "(256, 256, 31)" in proc.stdout
    # the bundled axial T2 scan covers 239 mm along S-I: the multiprotocol pair, all three planes
    assert "acquisition plane: axial\nmr-auto model: mr_multiprotocol_kidney (axial acquisition covering 239 mm)" in proc.stdout


def test_info_names_the_model_mr_auto_uses_on_a_coronal_scan():
    scan = next((UKAT / "ge_01").glob("*_e1.nii.gz"))
    proc = run("info", str(scan))
    assert proc.returncode == 0
    assert "acquisition plane: coronal\nmr-auto model: mr_multiprotocol_kidney" in proc.stdout


def test_train_then_segment_with_local_model(tmp_path, two_kidney_phantom):
    image, labels, affine = two_kidney_phantom
    root = tmp_path / "Dataset002"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(2):
        save_nifti(image, affine, root / "imagesTr" / f"c{i}_0000.nii.gz")
        save_nifti(labels, affine, root / "labelsTr" / f"c{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "kidney_right": 1, "kidney_left": 2}}))
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"channels": [4, 8, 16], "num_res_units": 0, "patch_size": [32, 32],
                               "batch_size": 2, "target_spacing_mm": 1.5, "checkpoint_every": 1}))
    model = tmp_path / "model"
    proc = run("train", "--dataset", str(root), "--layout", "nnunet", "-o", str(model), "--config", str(cfg),
               "--iterations", "2", "--device", "cpu", "--threads", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((model / "config.json").read_text())
    assert saved["iterations"] == 2 and saved["layout"] == "nnunet" and saved["channels"] == [4, 8, 16]
    src = root / "imagesTr" / "c0_0000.nii.gz"
    proc = run("segment", str(src), "-o", str(tmp_path / "seg"), "--model", str(model), "--device", "cpu",
               "--quiet", "--no-overlay")
    assert proc.returncode == 0, proc.stderr
    seg = nib.load(tmp_path / "seg" / "c0_0000_seg.nii.gz")
    assert seg.shape == image.shape and np.array_equal(seg.affine, nib.load(src).affine)
    assert not (tmp_path / "seg" / "c0_0000_overlay.png").exists()
    bad = run("train", "--dataset", str(root), "--layout", "nnunet", "-o", str(tmp_path / "m2"),
              "--patch-size", "30", "30", "--quiet")
    assert bad.returncode == 2 and "patch_size" in bad.stderr


def test_version_flag(capsys):
    from kidneyseg import __version__
    from kidneyseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"kidneyseg {__version__}"


def test_empty_output_and_negative_counts_are_usage_errors(tmp_path):
    """`-o ""` used to write into the current folder and `--threads -1` was accepted (issue 24 item 12)."""
    r = run("segment", str(EXAMPLE), "-o", "", cwd=tmp_path)
    assert r.returncode == 2 and "empty path" in r.stderr and not any(tmp_path.iterdir())
    for flag, value in (("--threads", "-1"), ("--workers", "0")):
        r = run("segment", str(EXAMPLE), "-o", str(tmp_path / "o"), flag, value)
        assert r.returncode == 2 and f"{flag}: expected an integer >=" in r.stderr and not (tmp_path / "o").exists()


@needs_model
def test_each_case_records_what_made_it(example_run):
    """<case>_run.json: kidneyseg version, pipeline, the model files' SHA-256 (the card's weights
    digest among them), the options and the input's SHA-256 (issue 25, provenance)."""
    from kidneyseg import __version__
    from kidneyseg.provenance import file_sha256

    proc, out, before = example_run
    record = json.loads((out / "image_39_run.json").read_text())
    assert record["kidneyseg_version"] == __version__ and record["pipeline"] == "mr-auto"
    assert record["input"]["sha256"] == before and record["case"] == "image_39"
    weights = default_model_dir() / "model.pt"
    assert record["model"]["sha256"]["mr-t2-unet/model.pt"] == file_sha256(weights)
    other = default_model_dir("mr_multiprotocol_kidney") / "model.pt"
    assert record["model"]["sha256"]["mr-multiprotocol-unet/model.pt"] == file_sha256(other)
    # the bundled axial T2 scan covers the abdomen: it goes to the multiprotocol pair, and the record says so
    assert record["model"]["used"] == "mr_multiprotocol_kidney"
    assert record["model"]["route"] == "axial acquisition covering 239 mm"
    assert file_sha256(weights) in (default_model_dir() / "model_card.md").read_text()
    assert record["options"]["tta"] is True and "image_39_seg.nii.gz" in record["outputs"]


def test_totalsegmentator_habits_input_option_and_fast(tmp_path):
    """`-i PATH` (repeatable) joins the positional inputs; `--fast` is `--no-tta` (recorded in
    the provenance as tta false)."""
    out = tmp_path / "out"
    r = cli("segment", "-i", EXAMPLE, "-o", out, "--fast", "--quiet", "--no-overlay")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "image_39_run.json").read_text())
    assert record["options"]["tta"] is False
    r = cli("segment", "-o", tmp_path / "none", "--quiet")
    assert r.returncode == 2 and "no input paths" in r.stderr


def test_save_probabilities_writes_the_kidney_probability_on_the_input_grid(tmp_path):
    """--save-probabilities (nnU-Net's --save_probabilities spelling works too): float32 in
    [0, 1] on the input's exact grid, high inside the written mask and low far outside."""
    out = tmp_path / "out"
    r = cli("segment", EXAMPLE, "-o", out, "--save_probabilities", "--no-tta", "--quiet", "--no-overlay")
    assert r.returncode == 0, r.stderr
    src, prob_img = nib.load(EXAMPLE), nib.load(out / "image_39_prob.nii.gz")
    prob, mask = np.asarray(prob_img.dataobj), np.asarray(nib.load(out / "image_39_seg.nii.gz").dataobj)
    assert prob.dtype == np.float32 and prob.shape == src.shape and np.array_equal(prob_img.affine, src.affine)
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert prob[mask > 0].mean() > 0.8 and prob[mask == 0].mean() < 0.05
    assert json.loads((out / "image_39_run.json").read_text())["options"]["save_probabilities"] is True


def test_library_warnings_do_not_reach_stderr_unless_debug():
    """A numpy RuntimeWarning inside a command is not printed (one line per problem is the
    contract); --debug shows it. A real process: pytest records warnings itself in-process."""
    code = ("import sys, warnings\n"
            "from kidneyseg import cli\n"
            "def noisy(args):\n"
            "    warnings.warn('invalid value encountered in divide', RuntimeWarning)\n"
            "    return 0\n"
            "cli._COMMANDS['info'] = noisy\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    quiet = subprocess.run([sys.executable, "-c", code, "info", str(EXAMPLE)], capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-c", code, "info", str(EXAMPLE), "--debug"], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert loud.returncode == 0 and "invalid value encountered" in loud.stderr


@needs_model
def test_verbose_reports_each_stage_and_loads_the_model_once(tmp_path):
    """--verbose: a line per stage of each case, with seconds, on stderr (not a terminal here);
    the model is loaded for the first case only; without --verbose no stage lines."""
    import shutil

    for name in ("a", "b"):
        shutil.copy(EXAMPLE, tmp_path / f"{name}.nii.gz")
    r = cli("segment", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", "-o", tmp_path / "out", "--verbose",
            "--no-tta", "--no-overlay")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    for case in ("a", "b"):
        stages = [ln.split(": ", 1)[1].split(" (")[0] for ln in lines if ln.startswith(f"{case}: ")]
        assert stages[:-1] == (["read", "load model", "segment", "write"] if case == "a" else
                               ["read", "segment", "write"]), lines
        assert stages[-1].startswith("done in") and "segment " in lines[[i for i, ln in enumerate(lines)
                                                                         if ln.startswith(f"{case}: done")][0]]
    r = cli("segment", tmp_path / "a.nii.gz", "-o", tmp_path / "out2", "--no-tta", "--no-overlay")
    assert r.returncode == 0 and not [ln for ln in r.stderr.splitlines() if ln.startswith("a: ")], r.stderr


def test_threads_caps_simpleitk_as_well_as_torch(tmp_path):
    """`--threads N` is the CPU budget of the whole command: N4 bias correction and registration
    run in SimpleITK, whose own default is every core."""
    import SimpleITK
    import torch

    from kidneyseg.cohort import run_segment
    from kidneyseg.errors import InputError
    from kidneyseg.inference.cpu import set_cpu_threads
    from kidneyseg.runner import SegmentRequest

    before = set_cpu_threads(2)
    try:
        with pytest.raises(InputError):  # the budget is set before the inputs are checked
            run_segment(SegmentRequest(out_dir=tmp_path / "o", inputs=[tmp_path / "missing.nii.gz"], threads=1))
        assert torch.get_num_threads() == 1
        assert SimpleITK.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
    finally:
        set_cpu_threads(*before)
