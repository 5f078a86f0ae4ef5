"""How often the kidney-length QC limits fire on expert whole-kidney masks.

    python benchmarks/mr_kidney_length_reference.py [--out benchmarks/results/mr_kidney_length_reference.md]

Rule "The length flag judged against whole-kidney references" (benchmarks/README.md): the limits
of ``mr_qc_thresholds.length_flag`` (a kidney shorter than 80 mm, or the two sides more than 20 mm
apart; fixed from anatomy) applied to the references themselves, measured with the pipeline's own
``kidneyseg.volumetry.kidney_measures`` (pole-to-pole length along the principal axis, mm):

- **CHAOS** (``../shared/data/chaos_t2``, CC BY-SA 4.0): the 15 axial T2-SPIR cases' expert masks;
- **ukat** (``../shared/data/ukat_kidney_masks``, GPL-3.0): the 3 whole-kidney references
  (ge_01, philips_01, siemens_01).

A flag on an expert mask is a false alarm that no segmentation, however good, can avoid.
Reads 18 volumes; about 15 s on one core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from mr_generalisation import expert_labels  # noqa: E402
from mr_qc_thresholds import LENGTH_DIFF_MAX_MM, LENGTH_MIN_MM, length_flag  # noqa: E402

from kidneyseg.datasets.layouts import chaos_cases, ukat_cases  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.training.data import read_case  # noqa: E402
from kidneyseg.volumetry import kidney_measures  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def reference_row(case, domain: str) -> dict:
    """The expert mask's kidney lengths (mm) and the flag the limits give it."""
    _, ref = read_case(case)
    measures = kidney_measures(ref.with_array(expert_labels(case, ref)), MR_KIDNEYS)
    row = {"domain": domain, "case": case.case_id, **{f"scan_{k}": v for k, v in measures.items()}}
    row["flag"] = length_flag(row)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mr_kidney_length_reference.md")
    args = ap.parse_args()
    rows = [reference_row(c, "chaos") for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS)]
    rows += [reference_row(c, "ukat") for c in ukat_cases(DATA / "ukat_kidney_masks", MR_KIDNEYS, whole_only=True)]
    flagged = [r for r in rows if r["flag"]]
    lengths = [r[f"scan_{s}_length_mm"] for r in rows for s in MR_KIDNEYS.values()]
    lines = ["# Kidney-length QC limits on expert masks", "",
             f"Written by `benchmarks/mr_kidney_length_reference.py`. Limits: a kidney shorter than {LENGTH_MIN_MM:g} mm "
             f"or the sides more than {LENGTH_DIFF_MAX_MM:g} mm apart (`mr_qc_thresholds.length_flag`).", "",
             f"- references: {len(rows)} ({sum(r['domain'] == 'chaos' for r in rows)} CHAOS, "
             f"{sum(r['domain'] == 'ukat' for r in rows)} ukat whole-kidney); flagged: **{len(flagged)}**"
             + (f" ({', '.join(r['domain'] + ' ' + r['case'] for r in flagged)})" if flagged else ""),
             f"- kidney length over the {len(lengths)} kidneys: {min(lengths):.1f}-{max(lengths):.1f} mm, "
             f"mean {np.mean(lengths):.1f} mm", "",
             "| domain | case | length R / L (mm) | difference (mm) | flag |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        a, b = r["scan_kidney_right_length_mm"], r["scan_kidney_left_length_mm"]
        lines.append(f"| {r['domain']} | {r['case']} | {a} / {b} | {abs(a - b):.1f} | {r['flag']} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6]))


if __name__ == "__main__":
    main()
