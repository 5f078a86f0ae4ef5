"""A ``low_confidence`` threshold of its own for three-plane predictions: the verdict of the rule
"A QC threshold of its own for three-plane predictions" (benchmarks/README.md, 2026-12-05 11:08 UTC).

    python benchmarks/mr_qc_three_planes.py --rows MODEL:chaos=TAG_PREFIX ... --fast-rows MODEL:chaos=TAG_PREFIX ... \
        [--slabs benchmarks/results/isotropic_slabs_qc.jsonl] [--present 1.016] [--present-fast 1.342]

- ``--rows``: three-plane held-out predictions with the shipped settings (CHAOS, whole axial scans);
  ``--fast-rows`` the same cases with one plain pass (``--fast``). Each set gives its threshold (the
  largest ``uncertain_fraction`` of a success, :func:`mr_qc_thresholds.threshold`) and its false alarms
  leave-one-row-out, against the flags the present thresholds raise on the same rows.
- ``--slabs``: ``isotropic_slabs.py`` rows (CHAOS slabs at 3 mm isotropic, three planes, with QC values):
  a slab fails when a scored kidney has Dice below 0.80; the share of failing slabs flagged by either
  flag with the new threshold against the present one.

Writes ``benchmarks/results/mr_qc_three_planes.md`` and prints the thresholds as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from mr_qc_thresholds import is_failure, leave_one_out, pick_rows, threshold  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SLABS = ("c60", "up60", "down60", "c90")


def judge(rows: list[dict], present: float, min_dice: float) -> tuple[float, list[str], dict]:
    """Threshold on all rows, the Markdown rows, and counts (leave-one-row-out and present)."""
    t_all = threshold(rows, min_dice)
    md, n = [], {"failures": 0, "successes": 0, "loo_false": 0, "present_false": 0, "loo_caught": 0, "present_caught": 0}
    for r, t in zip(rows, leave_one_out(rows, min_dice)):
        bad = is_failure(r, min_dice)
        new, old = r["uncertain_fraction"] > t, r["uncertain_fraction"] > present
        n["failures" if bad else "successes"] += 1
        n["loo_caught" if bad else "loo_false"] += new
        n["present_caught" if bad else "present_false"] += old
        md.append(f"| {r['model']} | {r['case']} | {r.get('dice_kidney_right')} | {r.get('dice_kidney_left')} | "
                  f"{r['uncertain_fraction']} | {bad} | {t:.3f} | {new} | {old} |")
    return t_all, md, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", action="append", required=True)
    ap.add_argument("--fast-rows", action="append", required=True)
    ap.add_argument("--slabs", type=Path, default=RESULTS / "isotropic_slabs_qc.jsonl")
    ap.add_argument("--slab-tag", default="three-plane QC")
    ap.add_argument("--present", type=float, default=1.016)
    ap.add_argument("--present-fast", type=float, default=1.342)
    ap.add_argument("--min-dice", type=float, default=0.80)
    ap.add_argument("--jsonl", type=Path, default=RESULTS / "mr_generalisation.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "mr_qc_three_planes.md")
    args = ap.parse_args()
    every = [json.loads(line) for line in open(args.jsonl)]
    head = ["| model | case | Dice right | Dice left | uncertain_fraction | failure | threshold without it | "
            "flag (new, leave-one-out) | flag (present) |", "| --- " * 9 + "|"]
    md = ["# A QC threshold for three-plane predictions", "",
          "Written by `benchmarks/mr_qc_three_planes.py`; rule: benchmarks/README.md, \"A QC threshold of its own "
          f"for three-plane predictions\". Failure: a kidney below Dice {args.min_dice}.", ""]
    out = {}
    for name, specs, present in (("shipped settings", args.rows, args.present), ("--fast", args.fast_rows, args.present_fast)):
        rows = pick_rows(every, specs)
        t, table, n = judge(rows, present, args.min_dice)
        key = "low_confidence_threshold_three_planes" + ("_no_tta" if name == "--fast" else "")
        out[key] = round(t, 3)
        md += [f"## {name}: {key} = {t:.3f} (present threshold {present})", "",
               f"- rows: {', '.join(f'`{s}`' for s in specs)}",
               f"- successes flagged: {n['loo_false']} of {n['successes']} leave-one-row-out, {n['present_false']} with "
               f"{present}; failures flagged: {n['loo_caught']} of {n['failures']} leave-one-row-out, "
               f"{n['present_caught']} with {present}", ""] + head + table + [""]
        out[key + "_counts"] = n
    slabs = [json.loads(line) for line in open(args.slabs)] if args.slabs.is_file() else []
    slabs = [r for r in slabs if r["slab"] in SLABS and r.get("tag", "").startswith(args.slab_tag)
             and "uncertain_fraction" in r]
    fails = [r for r in slabs if is_failure(r, args.min_dice)]
    t_new = out["low_confidence_threshold_three_planes"]

    def share(rs: list[dict], t: float) -> tuple[int, int, int]:
        low = sum(r["uncertain_fraction"] > t for r in rs)
        either = sum(r["uncertain_fraction"] > t or bool(r.get("volume_outside_validated_range")) for r in rs)
        return low, either, len(rs)

    wins = [r for r in slabs if not is_failure(r, args.min_dice)]
    for label, t in (("new", t_new), ("present", args.present)):
        lf, ef, nf = share(fails, t)
        lw, ew, nw = share(wins, t)
        out[f"slabs_{label}"] = {"threshold": t, "failures": nf, "failures_low_confidence": lf, "failures_either": ef,
                                 "successes": nw, "successes_low_confidence": lw, "successes_either": ew}
    md += ["## Stand-in three-plane failures: CHAOS slabs at 3 mm isotropic (`isotropic_slabs.py`)", "",
           f"{len(slabs)} slabs ({', '.join(SLABS)}) of {len({r['case'] for r in slabs})} cases, each predicted by its "
           "fold's pair with three planes.", "",
           "| threshold | failing slabs | flagged by low_confidence | flagged by either flag | slabs without failure | "
           "flagged by low_confidence | by either flag |", "| --- " * 7 + "|"]
    for label in ("new", "present"):
        s = out[f"slabs_{label}"]
        md.append(f"| {label} ({s['threshold']}) | {s['failures']} | {s['failures_low_confidence']} | {s['failures_either']} | "
                  f"{s['successes']} | {s['successes_low_confidence']} | {s['successes_either']} |")
    args.out.write_text("\n".join(md) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
