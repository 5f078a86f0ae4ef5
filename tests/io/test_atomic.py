"""A `kidneyseg segment` killed at any moment leaves every output either in its old state
or complete and new; SIGTERM also removes the staged temporary files."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image as PILImage

from kidneyseg.api import example_dir

NAMES = ("image_39_seg.nii.gz", "image_39_labels.json", "image_39_overlay.png", "volumes.csv", "volumes.json")
OLD = b"old output from an earlier run\n"


def _cmd(out):
    # --fast: what is tested is the writing of the outputs, not the test-time passes
    return [sys.executable, "-m", "kidneyseg.cli", "segment", str(example_dir() / "image_39.nii.gz"), "-o", str(out),
            "--overwrite", "--quiet", "--threads", "1", "--fast"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("atomic_ref")
    subprocess.run(_cmd(out), check=True)
    return {n: (out / n).read_bytes() for n in NAMES}


def _is_new(name, data, reference) -> bool:
    """Complete new content: identical for the deterministic files, parseable and
    complete for the tables (they hold timings) and the picture."""
    if name.endswith((".nii.gz", "labels.json")):
        return data == reference[name]
    if name.endswith(".png"):
        import io

        try:
            PILImage.open(io.BytesIO(data)).load()
            return True
        except Exception:
            return False
    if name.endswith(".csv"):
        rows = list(csv.DictReader(data.decode().splitlines()))
        return len(rows) == 1 and rows[0]["case"] == "image_39" and float(rows[0]["total_ml"]) > 0
    doc = json.loads(data)
    return len(doc) == 1 and doc[0]["case"] == "image_39"


def _wait_for(out, moment, proc, timeout=120.0):
    """Return once ``moment`` is reached: "early" (1 s after start), "staging" (a temporary
    output file exists), "committed" (the mask has been renamed into place)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        if moment == "early" and time.monotonic() - t0 > 1.0:
            return True
        if moment == "staging" and any(p.name.startswith(".") and ".tmp" in p.name for p in out.iterdir()):
            return True
        if moment == "committed" and (out / NAMES[0]).read_bytes() != OLD:
            return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("moment", ["early", "staging", "committed"])
def test_killed_segment_leaves_old_or_complete_outputs(tmp_path, reference, sig, moment):
    out = tmp_path / "out"
    out.mkdir()
    for n in NAMES:
        (out / n).write_bytes(OLD)
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reached = _wait_for(out, moment, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    if not reached:
        pytest.skip(f"the run finished before the moment {moment!r} was seen")
    states = []
    for n in NAMES:
        data = (out / n).read_bytes()
        assert data == OLD or _is_new(n, data, reference), f"{n} is neither the old nor a complete new file"
        states.append("old" if data == OLD else "new")
    if moment == "committed":
        assert states[0] == "new"
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    if sig == signal.SIGTERM:
        assert hidden == [], f"temporary files left after SIGTERM: {hidden}"
    else:  # SIGKILL cannot be handled: at most hidden, clearly temporary, files remain
        assert all(".tmp" in h for h in hidden), hidden


# Deterministic versions of the races above: a signal handler may run between any two
# instructions, including inside AtomicOutputs.__exit__ after the with-block has ended.

def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_interrupt_during_commit_keeps_renamed_files_and_deletes_the_rest(tmp_path, monkeypatch):
    import os

    from kidneyseg.io import writers

    real_replace = os.replace
    calls = []

    def replace_then_interrupt(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise SystemExit(143)  # what the CLI's SIGTERM handler raises
        real_replace(src, dst)

    monkeypatch.setattr(writers.os, "replace", replace_then_interrupt)
    with pytest.raises(SystemExit):
        with writers.AtomicOutputs(overwrite=True) as outs:
            outs.stage(tmp_path / "a.csv").write_text("a\n")
            outs.stage(tmp_path / "b.csv").write_text("b\n")
    assert (tmp_path / "a.csv").read_text() == "a\n"
    assert not (tmp_path / "b.csv").exists()
    assert _hidden(tmp_path) == []
    assert writers._LIVE == set()


def test_remove_staged_files_deletes_unpublished_temporaries_only(tmp_path):
    from kidneyseg.io import writers

    done = writers.AtomicOutputs(overwrite=True)
    done.stage(tmp_path / "done.json").write_text("{}")
    done.commit()
    pending = writers.AtomicOutputs(overwrite=True)
    tmp = pending.stage(tmp_path / "pending.nii.gz")
    tmp.write_bytes(b"partial")
    assert tmp.name.startswith(".pending.") and tmp.name.endswith(".tmp.nii.gz")
    writers.remove_staged_files()  # what the SIGTERM handler does before it unwinds
    assert _hidden(tmp_path) == []
    assert (tmp_path / "done.json").read_text() == "{}"
    pending.abort()  # the with-block's own cleanup afterwards finds nothing and does not fail
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.json"]


def test_stale_staged_files_of_a_killed_run_are_removed_under_the_lock(tmp_path):
    """After SIGKILL only hidden staged files can remain; the next run into the folder removes
    them once it holds the folder's lock, and touches nothing else."""
    from kidneyseg.api import output_lock
    from kidneyseg.io.writers import AtomicOutputs

    stale = []
    for target in ("case_seg.nii.gz", "volumes.csv", "case_overlay.png"):
        outs = AtomicOutputs(overwrite=True)
        staged = outs.stage(tmp_path / target)  # the name a killed run leaves behind
        outs._staged.clear()  # forget it, as a SIGKILLed process would
        from kidneyseg.io import writers

        writers._LIVE.discard(staged)
        staged.write_bytes(b"partial")
        stale.append(staged)
    others = [tmp_path / ".notes.txt", tmp_path / "case_seg.nii.gz.tmp", tmp_path / "volumes.csv"]
    for p in others:
        p.write_text("keep")
    with output_lock(tmp_path):
        pass
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "keep" for p in others)


def test_a_dicom_folder_given_as_dot_is_named_after_the_folder(tmp_path, monkeypatch):
    from kidneyseg.io import case_name

    (tmp_path / "series_7").mkdir()
    monkeypatch.chdir(tmp_path / "series_7")
    assert case_name(".") == "series_7" and case_name("..") == tmp_path.name
