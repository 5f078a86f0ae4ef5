"""Cohort batches: manifest, status table, re-runs that skip finished cases (checked by
checksum), a failure that does not stop the others, a kill that loses no finished case."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.api import example_dir
from kidneyseg.batch import read_manifest, sha256
from kidneyseg.errors import InputError

from ..conftest import cli


def _run(*args, timeout=600):
    # --fast (one pass): the batch bookkeeping is tested here, not the test-time passes
    return cli("segment", *args, "--threads", "2", "--fast")


@pytest.fixture
def cohort(tmp_path):
    """Three real cases (the bundled CHAOS case under three names) and one missing file."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(example_dir() / "image_39.nii.gz", data / f"{name}.nii.gz")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("case,path\npatient_a,data/a.nii.gz\npatient_gone,data/missing.nii.gz\n"
                        "patient_b,data/b.nii.gz\npatient_c,data/c.nii.gz\n")
    return manifest


def _status(out):
    return {r["case"]: r for r in json.loads((out / "status.json").read_text())["cases"]}


def test_manifest_batch_status_and_resume(cohort, tmp_path):
    out = tmp_path / "out"
    r = _run("--manifest", cohort, "-o", out, "--no-overlay", "--quiet")
    assert r.returncode == 2  # one case failed; the others went on
    assert r.stderr.count("\n") == 1 and "missing.nii.gz: no such file or folder" in r.stderr
    st = _status(out)
    assert [c for c in st] == ["patient_a", "patient_gone", "patient_b", "patient_c"]  # manifest order
    assert st["patient_gone"]["status"] == "failed" and "no such file" in st["patient_gone"]["error"]
    assert all(st[c]["status"] == "done" and st[c]["seconds"] > 0 for c in ("patient_a", "patient_b", "patient_c"))
    assert st["patient_a"]["outputs"]["patient_a_seg.nii.gz"] == sha256(out / "patient_a_seg.nii.gz")
    vols = json.loads((out / "volumes.json").read_text())
    assert [v["case"] for v in vols] == ["patient_a", "patient_b", "patient_c"]
    assert (out / "status.csv").read_text().splitlines()[0] == "case,input,status,error,seconds"

    # re-run: nothing to do but the failed case; finished outputs untouched
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("patient_*")}
    r = _run("--manifest", cohort, "-o", out, "--no-overlay")
    assert r.returncode == 2 and "3 case(s) already done, skipped: patient_a, patient_b, patient_c" in r.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("patient_*")} == before

    # a changed output fails its checksum: only that case is redone
    (out / "patient_b_seg.nii.gz").write_bytes(b"damaged")
    r = _run("--manifest", cohort, "-o", out, "--no-overlay")
    assert "2 case(s) already done, skipped: patient_a, patient_c" in r.stdout
    assert _status(out)["patient_b"]["outputs"]["patient_b_seg.nii.gz"] == sha256(out / "patient_b_seg.nii.gz")
    assert [v["case"] for v in json.loads((out / "volumes.json").read_text())] == ["patient_a", "patient_b", "patient_c"]

    # a replaced input (same path, other bytes) is redone; so is every case under other options (issue 24 item 7)
    src_c = Path(_status(out)["patient_c"]["input"])
    img = nib.load(str(src_c))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine, img.header), str(src_c))
    r = _run("--manifest", cohort, "-o", out, "--no-overlay")
    assert "2 case(s) already done, skipped: patient_a, patient_b" in r.stdout
    r = _run("--manifest", cohort, "-o", out, "--no-overlay", "--keep-all-components")
    assert "already done" not in r.stdout and _status(out)["patient_a"]["settings"]["keep_largest"] is False


def test_killed_batch_keeps_finished_cases(cohort, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kidneyseg.cli", "segment", "--manifest", str(cohort), "-o", str(out),
                             "--no-overlay", "--quiet", "--threads", "2", "--fast"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300 and proc.poll() is None:
        try:
            if sum(r["status"] == "done" for r in _status(out).values()) >= 1:
                break
        except (FileNotFoundError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = _status(out)
    done = [c for c, r in st.items() if r["status"] == "done"]
    if len(done) == 3:
        pytest.skip("the batch finished before it could be killed")
    assert done and all((out / f"{c}_seg.nii.gz").is_file() for c in done)
    assert all(r["outputs"][n] == sha256(out / n) for r in st.values() if r["status"] == "done" for n in r["outputs"])
    assert {v["case"] for v in json.loads((out / "volumes.json").read_text())} == set(done)
    visible = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    partial = [n for n in visible if n.endswith("_seg.nii.gz") and n[: -len("_seg.nii.gz")] not in done]
    assert not partial  # an unfinished case has no visible mask
    r = _run("--manifest", cohort, "-o", out, "--no-overlay")
    assert f"{len(done)} case(s) already done" in r.stdout
    assert sum(r["status"] == "done" for r in _status(out).values()) == 3


def test_manifest_errors(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("file\nx.nii.gz\n")
    with pytest.raises(InputError, match="needs a 'path' column"):
        read_manifest(m)
    m.write_text("case,path\np1,a.nii.gz\np1,b.nii.gz\n")
    with pytest.raises(InputError, match=r"row 3: case 'p1' already named in row 2"):
        read_manifest(m)
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path / "none.csv")
    m.write_text("path\n/abs/x.nii.gz\nrel/y.nii\n")
    assert read_manifest(m) == [("x", Path("/abs/x.nii.gz")), ("y", tmp_path / "rel" / "y.nii")]


@pytest.mark.parametrize("case", ["../../escaped_case", "/abs/name", "..", "sub\\\\name"])
def test_manifest_case_cannot_escape_the_output_folder(tmp_path, case):
    m = tmp_path / "m.csv"
    m.write_text(f"case,path\n{case},a.nii.gz\n")
    with pytest.raises(InputError, match="not a plain file name"):
        read_manifest(m)


def test_segmenting_into_the_input_folder_twice_does_not_segment_its_own_masks(tmp_path):
    """`segment d -o d`, then again with --overwrite: the second run sees the first run's
    s1_seg.nii.gz beside s1.nii.gz and leaves it out (issue 24 item 6)."""
    import shutil

    from kidneyseg.api import example_dir

    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(example_dir() / "image_39.nii.gz", d / "s1.nii.gz")
    first = cli("segment", d, "-o", d, "--quiet", "--no-overlay", "--no-tta")
    assert first.returncode == 0, first.stderr
    again = cli("segment", d, "-o", d, "--quiet", "--no-overlay", "--no-tta", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert not list(d.glob("*_seg_seg*"))
    rows = json.loads((d / "volumes.json").read_text())
    assert [r["case"] for r in rows] == ["s1"]


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path):
    """Two segment runs into one -o used to both exit 0 with one run's rows lost from
    volumes.csv (issue 24 item 5): while one run holds the folder, another gets one line, exit 2."""
    from kidneyseg.api import example_dir, output_lock

    out = tmp_path / "o"
    out.mkdir()
    with output_lock(out):
        busy = cli("segment", example_dir() / "image_39.nii.gz", "-o", out, "--quiet")
    assert busy.returncode == 2 and "another kidneyseg run is writing into this folder" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1 and not any(out.iterdir())
    with output_lock(out):  # released when the first run ends: the folder can be taken again
        pass
