"""Volume tables (CSV and JSON), one row per case."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..io import AtomicOutputs


def write_volume_tables(rows: list[dict], out_dir: str | Path, overwrite: bool = False, stem: str = "volumes") -> None:
    """Write ``<stem>.csv`` and ``<stem>.json`` atomically; columns are the union of the
    rows' keys in first-seen order."""
    out_dir = Path(out_dir)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with AtomicOutputs(overwrite=overwrite) as outs:
        outs.stage(out_dir / f"{stem}.csv").write_text(buf.getvalue(), encoding="utf-8")
        outs.stage(out_dir / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
