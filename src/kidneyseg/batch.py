"""Cohort batches that survive a crash: a manifest of cases, a per-case status table written
after every case, and re-runs that skip what is finished (checked by output checksum).

``status.csv`` / ``status.json`` in the output folder hold one row per case: ``case``,
``input``, ``status`` (``done`` or ``failed``), ``error`` (one line), ``seconds``, and for a
finished case the SHA-256 of each output file. Both tables, and ``volumes.csv`` /
``volumes.json`` (the rows of every finished case), are rewritten atomically after each
case, so a kill at any moment loses no finished case and leaves no partial file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .io import AtomicOutputs, case_name

STATUS_JSON = "status.json"
STATUS_CSV = "status.csv"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: str | Path) -> list[tuple[str, Path]]:
    """Read a cohort manifest: a CSV with a ``path`` column (a NIfTI file, DICOM folder or
    PAR/REC file; relative paths are relative to the manifest's folder) and an optional
    ``case`` column (default: the file name without extension).

    Missing input files are not an error here: they become ``failed`` rows of the status
    table and the rest of the batch goes on.

    Returns:
        ``[(case, path), ...]`` in manifest order.

    Raises:
        InputError: missing or unreadable manifest, no ``path`` column, an empty path, no
            rows, or two rows with one case name (naming the rows).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{p}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: unreadable manifest ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    if "path" not in (reader.fieldnames or []):
        raise InputError(f"{p}: manifest needs a 'path' column (found: {', '.join(reader.fieldnames or []) or 'none'})")
    items: list[tuple[str, Path]] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        raw = (row.get("path") or "").strip()
        if not raw:
            raise InputError(f"{p}: row {line}: empty path")
        f = Path(raw) if Path(raw).is_absolute() else p.parent / raw
        case = (row.get("case") or "").strip() or case_name(f)
        if case in (".", "..") or "/" in case or "\\" in case or "\x00" in case:
            raise InputError(f"{p}: row {line}: case {case!r} is not a plain file name (it would write outside -o)")
        if case in seen:
            raise InputError(f"{p}: row {line}: case {case!r} already named in row {seen[case]}")
        seen[case] = line
        items.append((case, f))
    if not items:
        raise InputError(f"{p}: manifest has no rows")
    return items


@dataclass
class BatchStatus:
    """The status table of one output folder (see module docstring)."""

    out_dir: Path
    rows: dict[str, dict] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # what changes a result: pipeline, model files' SHA-256, options

    @classmethod
    def load(cls, out_dir: Path) -> "BatchStatus":
        """The table of an earlier run in ``out_dir``, or an empty one.

        Raises:
            InputError: ``status.json`` exists but is not a kidneyseg status table.
        """
        path = out_dir / STATUS_JSON
        if not path.exists():
            return cls(out_dir)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))["cases"]
            return cls(out_dir, {r["case"]: r for r in rows})
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a kidneyseg status table ({exc.__class__.__name__})") from None

    def is_done(self, case: str, source: Path) -> bool:
        """True when ``case`` finished from the same input path with the same content
        (SHA-256, :func:`kidneyseg.provenance.input_sha256`), with the same :attr:`settings`
        (pipeline, model files, options), and every output it recorded is still there with
        the recorded SHA-256. A replaced input, another ``--model``, ``--no-tta`` or
        ``--pipeline`` redoes the case."""
        from .provenance import input_sha256

        r = self.rows.get(case)
        if not r or r.get("status") != "done" or r.get("input") != str(source):
            return False
        if r.get("settings") != self.settings:
            return False
        try:
            if r.get("input_sha256") != input_sha256(source):
                return False
        except OSError:
            return False
        for name, digest in r.get("outputs", {}).items():
            f = self.out_dir / name
            if not f.is_file() or sha256(f) != digest:
                return False
        return True

    def done(self, case: str, source: Path, outputs: list[Path], volumes: dict, seconds: float,
             input_sha256: str) -> None:
        """Record a finished case; ``input_sha256`` is the digest its ``<case>_run.json`` holds
        (computed once per case, :func:`kidneyseg.provenance.input_sha256`)."""
        self.rows[case] = {"case": case, "input": str(source), "status": "done", "error": "", "seconds": round(seconds, 2),
                           "input_sha256": input_sha256, "settings": self.settings,
                           "outputs": {o.name: sha256(o) for o in outputs}, "volumes": volumes}

    def failed(self, case: str, source: Path, error: str, seconds: float) -> None:
        self.rows[case] = {"case": case, "input": str(source), "status": "failed", "error": " ".join(error.split()),
                           "seconds": round(seconds, 2), "outputs": {}, "volumes": None}

    def volume_rows(self, order: list[str]) -> list[dict]:
        """Volume rows of finished cases, in ``order`` first, then any others."""
        names = [c for c in order if c in self.rows] + [c for c in self.rows if c not in order]
        return [self.rows[c]["volumes"] for c in names if self.rows[c]["status"] == "done" and self.rows[c]["volumes"]]

    def save(self, order: list[str], volumes_stem: str = "volumes") -> None:
        """Rewrite ``status.csv``, ``status.json`` and the volume tables atomically."""
        from .report import write_volume_tables

        names = [c for c in order if c in self.rows] + [c for c in self.rows if c not in order]
        rows = [self.rows[c] for c in names]
        table = io.StringIO()
        w = csv.writer(table, lineterminator="\n")
        w.writerow(["case", "input", "status", "error", "seconds"])
        w.writerows([r["case"], r["input"], r["status"], r["error"], r["seconds"]] for r in rows)
        with AtomicOutputs(overwrite=True) as outs:
            outs.stage(self.out_dir / STATUS_JSON).write_text(json.dumps({"cases": rows}, indent=2) + "\n", encoding="utf-8")
            outs.stage(self.out_dir / STATUS_CSV).write_text(table.getvalue(), encoding="utf-8")
        vols = self.volume_rows(order)
        if vols:
            write_volume_tables(vols, self.out_dir, overwrite=True, stem=volumes_stem)


__all__ = ["BatchStatus", "read_manifest", "sha256"]
