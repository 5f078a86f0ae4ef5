"""Every corpus input through `kidneyseg info`, `segment` and `evaluate` (in-process through
``kidneyseg.cli.main``; a real process where a resource limit is part of the case):
exit 0 with a correct result or exit 2 with one clear line; inputs byte-identical
afterwards; no partial outputs."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.io import read_image

from ..conftest import cli
from ..corpus import Kind, kinds, load_base

KINDS = kinds()
FSIZE_LIMIT = 4096  # bytes: a "disk" that fills after 4 kB


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


@dataclass
class Run:
    kind: Kind
    command: str
    expected: int
    input: Path
    out: Path | None
    returncode: int
    stdout: str
    stderr: str
    digest_before: str
    digest_after: str


def _run(kind: Kind, command: str, expected: int, image: Path, mask: Path | None, ref: Path, work: Path) -> Run:
    out = work / f"out_{kind.name}_{command}"
    if kind.output == "is_file":
        out.write_text("I am a file, not a folder\n")
    elif kind.output == "read_only":
        out = Path("/sys/kidneyseg_read_only_test/out")
    target = image
    if command == "info":
        cmd, out = ["info", str(image)], None
    elif command == "segment":
        # --fast (one pass): the corpus tests input handling, not the test-time passes, which
        # would triple the time of each of its segmentations
        cmd = ["segment", str(image), "-o", str(out), "--threads", "1", "--fast"]
    else:
        target = mask if mask is not None else image
        cmd = ["evaluate", str(target), str(ref), "-o", str(out), "--quiet"]
    before = _digest(target)
    if kind.output == "fsize_limit":  # a resource limit needs a process of its own
        proc = subprocess.run([sys.executable, "-m", "kidneyseg.cli", *cmd], capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=300, preexec_fn=_limit_file_size,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    else:  # in-process: the same exit status and messages, without a torch import per command
        proc = cli(*cmd)
    return Run(kind, command, expected, target, out, proc.returncode, proc.stdout, proc.stderr, before, _digest(target))


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("corpus")
    base = load_base(work / "inputs")
    ref = base.folder / "reference_mask.nii.gz"
    jobs = []
    for kind in KINDS:
        image, mask = kind.make(base)
        for command in ("info", "segment", "evaluate"):
            expected = getattr(kind, command)
            if expected is not None:
                jobs.append((kind, command, expected, image, mask, ref, work))
    runs = [_run(*j) for j in jobs]  # one at a time: in-process commands share stdout/stderr
    return {(r.kind.name, r.command): r for r in runs}


def test_corpus_is_large_enough():
    assert len(KINDS) >= 30


@pytest.mark.parametrize("name,command", [(k.name, c) for k in KINDS for c in ("info", "segment", "evaluate")
                                          if getattr(k, c) is not None])
def test_corpus_entry(corpus_runs, name, command):
    r = corpus_runs[(name, command)]
    detail = f"{name} {command}: exit {r.returncode}, stderr {r.stderr.strip()[-400:]!r}"
    assert r.returncode == r.expected, detail
    assert r.digest_after == r.digest_before, f"{name}: input changed"
    if r.expected == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kidneyseg: error: "), detail
        if r.kind.message and command == "segment":
            assert r.kind.message.lower() in lines[0].lower(), detail
        if r.out is not None and r.out.is_dir():
            left = sorted(p.name for p in r.out.iterdir())
            if r.kind.name == "folder_good_and_bad":  # the good case completes, the bad one is reported
                assert left == ["good_labels.json", "good_overlay.png", "good_run.json", "good_seg.ctbl",
                                "good_seg.itksnap.txt", "good_seg.nii.gz", "volumes.csv",
                                "volumes.json"]
                seg = nib.load(str(r.out / "good_seg.nii.gz"))
                assert seg.shape == nib.load(str(r.input / "good.nii.gz")).shape
            else:
                assert left == [], f"{name}: partial outputs left: {left}"
        return
    assert r.stderr.strip() == "" or "warning" in r.stderr.lower(), detail
    if command == "info":
        assert "shape:" in r.stdout and "spacing_mm:" in r.stdout
    elif command == "segment":
        src = read_image(r.input)
        case = next(r.out.glob("*_seg.nii.gz"))
        seg = read_image(case)
        assert seg.shape == src.shape[:3] and np.array_equal(seg.affine, src.affine), f"{name}: geometry changed"
        assert set(np.unique(seg.array)) <= {0, 1, 2}
        assert not [p for p in r.out.iterdir() if p.name.startswith(".")], "temporary files left"
    else:
        assert (r.out / "metrics.csv").is_file() and (r.out / "summary.csv").is_file()
