"""What made a result: the record written beside every segmented case as ``<case>_run.json``.

A volume in a study database must be traceable to the software, pipeline, model weights,
settings and input that produced it (issue 25). The record holds the kidneyseg version, the
pipeline, the model folder with the SHA-256 of each of its files (compare with the model
card), the inference options, the UTC date, and the input's path and SHA-256 (for a DICOM
folder: a digest over its files' names and contents, so a replaced slice changes it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of one file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def input_sha256(path: str | Path) -> str:
    """SHA-256 of an input: the file's bytes, or for a folder the digest of every file's
    relative name and SHA-256, in sorted order."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode("utf-8") + b"\0" + file_sha256(f).encode("ascii") + b"\n")
    return h.hexdigest()


def model_files(folder: str | Path | None) -> dict[str, str]:
    """``{file name: SHA-256}`` of the weights and settings in a model folder (``*.pt``,
    ``*.json``); empty for ``None`` (a pipeline without a model)."""
    if folder is None:
        return {}
    d = Path(folder)
    if not d.is_dir():
        return {}
    return {f.name: file_sha256(f) for f in sorted(d.iterdir()) if f.is_file() and f.suffix in (".pt", ".json")}


def run_record(pipeline: str, model_folder: str | Path | None | dict[str, str | Path | None], options: dict) -> dict:
    """The run-level part of the record (the same for every case of one command).

    ``model_folder`` is one folder, ``None`` (no model), or for a pipeline that picks a model
    per scan (``PipelineSpec.routes``) ``{pipeline name: folder}``: then ``model.folder`` maps
    each name to its folder and ``model.sha256`` holds ``"name/file"`` keys.
    """
    from . import __version__

    if isinstance(model_folder, dict):
        model = {"folder": {k: None if f is None else str(Path(f).resolve()) for k, f in model_folder.items()},
                 "sha256": {f"{k}/{n}": h for k, f in model_folder.items() for n, h in model_files(f).items()}}
    else:
        model = {"folder": None if model_folder is None else str(Path(model_folder).resolve()),
                 "sha256": model_files(model_folder)}
    return {"kidneyseg_version": __version__, "pipeline": pipeline, "model": model,
            "options": dict(options), "python": platform.python_version(), "machine": platform.machine(),
            "started_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def case_record(run: dict, case: str, input_path: str | Path, outputs: list[str]) -> dict:
    """The full record of one case: ``run`` plus the case, its input and its output files."""
    return {**run, "case": case, "input": {"path": str(Path(input_path).resolve()), "sha256": input_sha256(input_path)},
            "outputs": list(outputs),
            "finished_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


__all__ = ["case_record", "file_sha256", "input_sha256", "model_files", "run_record"]
