"""QC settings of an MR model from held-out predictions (rule: benchmarks/README.md, "CHAOS
cross-validation of the multiprotocol recipe").

    python benchmarks/mr_qc_thresholds.py --rows MODEL[:DOMAIN]=TAG_PREFIX [--rows ...] \
        [--volume-rows MODEL[:DOMAIN]=TAG_PREFIX ...] [--min-dice 0.80] [--out MD]

Reads the rows of ``benchmarks/results/mr_generalisation.jsonl`` whose ``model`` is MODEL,
whose ``domain`` is DOMAIN (``ukat`` or ``chaos``; any when left out) and whose ``tag`` starts
with TAG_PREFIX (each a prediction of a case the model never trained on).
A row is a *failure* when either kidney scored there has Dice below ``--min-dice``.

- ``low_confidence_threshold``: the largest ``uncertain_fraction`` of a success, so that no
  success is flagged (the flag is ``uncertain_fraction > threshold``) and as many failures as
  possible are. Estimated leave-one-case-out: each row is judged by the threshold chosen on
  the others.
- ``validated_volume_ml``: the smallest and largest expert single-kidney volume of the
  whole-volume rows (a labelled-slice row has no volume).

Signals judged as candidates, when every row carries them:

- the member agreement of an ensemble's networks (``member_dice_right`` / ``_left``; rule
  "QC from the two networks' agreement"): threshold the smallest of a success, leave-one-case-out;
- the kidney length (``scan_kidney_*_length_mm``; rule "QC from the kidney's length"): a kidney
  shorter than ``LENGTH_MIN_MM`` or the two sides' lengths more than ``LENGTH_DIFF_MAX_MM`` apart,
  limits fixed from anatomy (nothing fitted).

Writes ``benchmarks/results/mr_qc_thresholds.md`` and prints the settings as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from kidneyseg.postprocess.quality import outside_range  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SIDES = ("kidney_right", "kidney_left")


def is_failure(row: dict, min_dice: float) -> bool:
    """Either kidney scored in ``row`` below ``min_dice``."""
    return any(row[f"dice_{s}"] < min_dice for s in SIDES if row.get(f"dice_{s}") is not None)


def threshold(rows: list[dict], min_dice: float) -> float:
    """The largest ``uncertain_fraction`` of a success (0.0 without one)."""
    return max((r["uncertain_fraction"] for r in rows if not is_failure(r, min_dice)), default=0.0)


def leave_one_out(rows: list[dict], min_dice: float) -> list[float]:
    """For each row, :func:`threshold` chosen on all the other rows."""
    return [threshold(rows[:i] + rows[i + 1:], min_dice) for i in range(len(rows))]


def member_dice(row: dict) -> float | None:
    """The smaller of the two kidneys' member agreement (``member_dice_right`` / ``_left``), or
    ``None`` for a row without it (a single network, or scored without ``--member-agreement``)."""
    values = [row.get("member_dice_right"), row.get("member_dice_left")]
    return None if None in values else min(values)


def member_threshold(rows: list[dict], min_dice: float) -> float:
    """The smallest ``member_dice`` of a success (flag: ``member_dice`` below it; 0.0 without one)."""
    return min((member_dice(r) for r in rows if not is_failure(r, min_dice)), default=0.0)


def pick_rows(every: list[dict], specs: list[str]) -> list[dict]:
    """The rows of ``every`` named by each ``MODEL[:DOMAIN]=TAG_PREFIX`` in ``specs``, in order.

    Raises:
        LookupError: a spec matches no row (the message is the spec).
    """
    out = []
    for spec in specs:
        model, _, prefix = spec.partition("=")
        model, _, domain = model.partition(":")
        picked = [r for r in every if r["model"] == model and r.get("tag", "").startswith(prefix)
                  and domain in ("", r["domain"])]
        if not picked:
            raise LookupError(spec)
        out += picked
    return out


LENGTH_MIN_MM = 80.0
"""Shortest plausible adult kidney (mean about 110 mm: Emamian et al., AJR 160, 1993)."""
LENGTH_DIFF_MAX_MM = 20.0
"""Largest side difference in length not worth a look (the usual 2 cm radiological rule)."""


def length_flag(row: dict) -> bool | None:
    """A found kidney shorter than ``LENGTH_MIN_MM``, or both found and more than
    ``LENGTH_DIFF_MAX_MM`` apart; ``None`` for a row without the lengths."""
    lengths = [row.get(f"scan_{s}_length_mm") for s in SIDES]
    if None in lengths:
        return None
    found = [v for v in lengths if v > 0]
    return any(v < LENGTH_MIN_MM for v in found) or (len(found) == 2 and abs(found[0] - found[1]) > LENGTH_DIFF_MAX_MM)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", action="append", required=True, metavar="MODEL[:DOMAIN]=TAG_PREFIX")
    ap.add_argument("--volume-rows", action="append", default=None, metavar="MODEL[:DOMAIN]=TAG_PREFIX",
                    help="rows whose expert volumes give validated_volume_ml (default: the --rows); the expert "
                         "volumes do not depend on the model, so an ensemble can keep its recipe's range")
    ap.add_argument("--min-dice", type=float, default=0.80)
    ap.add_argument("--jsonl", type=Path, default=RESULTS / "mr_generalisation.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "mr_qc_thresholds.md")
    args = ap.parse_args()
    every = [json.loads(line) for line in open(args.jsonl)]

    def pick(specs: list[str], option: str) -> list[dict]:
        try:
            return pick_rows(every, specs)
        except LookupError as exc:
            ap.error(f"{option} {exc}: no such rows in {args.jsonl}")

    rows = pick(args.rows, "--rows")
    volume_rows = rows if args.volume_rows is None else pick(args.volume_rows, "--volume-rows")
    t_all = threshold(rows, args.min_dice)
    loo = [(r, t, r["uncertain_fraction"] > t) for r, t in zip(rows, leave_one_out(rows, args.min_dice))]
    vols = [r[f"{s}_ref_ml"] for r in volume_rows if r.get("scope") == "volume" for s in SIDES if r.get(f"{s}_ref_ml")]
    lo, hi = (min(vols), max(vols)) if vols else (None, None)

    def volume_flag(r):  # with the new range, on the whole scan's predicted volumes (None: not recorded)
        scan = {f"{s}_ml": r.get(f"scan_{s}_ml", r.get(f"{s}_ml") if r.get("scope") == "volume" else None)
                for s in SIDES}
        return None if lo is None or None in scan.values() else outside_range(scan, list(SIDES), (lo, hi))

    loo = [(r, t, flagged, volume_flag(r)) for r, t, flagged in loo]
    fails = [x for x in loo if is_failure(x[0], args.min_dice)]
    wins = [x for x in loo if not is_failure(x[0], args.min_dice)]

    def either(xs):  # flagged by low_confidence or by the new volume range
        return sum(bool(f or v) for _, _, f, v in xs)
    settings = {"low_confidence_threshold": round(t_all, 3),
                "validated_volume_ml": [min(vols), max(vols)] if vols else None,
                "chosen_on": f"{len(rows)} held-out predictions ({len(wins)} successes): " + ", ".join(args.rows)}
    signals = []  # candidate signals: (note, column heads, per row: (cells, flagged)), rows in `loo` order
    if all(member_dice(r) is not None for r in rows):  # rule: "QC from the two networks' agreement"
        m_all = member_threshold(rows, args.min_dice)
        settings["member_dice_threshold"] = round(m_all, 3)
        per_row = []
        for i, r in enumerate(rows):
            t = member_threshold(rows[:i] + rows[i + 1:], args.min_dice)
            per_row.append(([f"{r['member_dice_right']} / {r['member_dice_left']}", f"{t:.3f}"], member_dice(r) < t))
        signals.append((f"`member_dice_threshold` (the smaller kidney's agreement of the ensemble's networks; flag "
                        f"below it) chosen on all rows: {m_all:.3f}",
                        ["member_dice R / L", "member threshold without it", "member agreement flag"], per_row))
    if all(length_flag(r) is not None for r in rows):  # rule: "QC from the kidney's length"
        signals.append((f"`kidney_length_implausible`: a kidney shorter than {LENGTH_MIN_MM:g} mm or the sides more "
                        f"than {LENGTH_DIFF_MAX_MM:g} mm apart (fixed limits)",
                        ["scan length R / L (mm)", "kidney length flag"],
                        [([f"{r['scan_kidney_right_length_mm']} / {r['scan_kidney_left_length_mm']}"], length_flag(r))
                         for r in rows]))
    failed = [is_failure(r, args.min_dice) for r in rows]

    def count(per_row, failure, new_only=False):  # rows of one outcome the signal flags (new: no other flag does)
        return sum(flag and not (new_only and (f or v)) for (_, flag), (_, _, f, v), bad in zip(per_row, loo, failed)
                   if bad == failure)

    md = ["# QC settings from held-out predictions", "",
          f"Written by `benchmarks/mr_qc_thresholds.py` from {len(rows)} rows of `{args.jsonl.name}`: "
          + ", ".join(f"`{s}`" for s in args.rows) + f". Failure: either kidney Dice < {args.min_dice}.", "",
          f"- failures: {len(fails)}, successes: {len(wins)}",
          f"- `low_confidence_threshold` chosen on all rows: {t_all:.3f}; leave-one-case-out, failures flagged: "
          f"{sum(f for _, _, f, _ in fails)} of {len(fails)}, successes flagged: "
          f"{sum(f for _, _, f, _ in wins)} of {len(wins)}",
          f"- `validated_volume_ml`: {settings['validated_volume_ml']} (expert single-kidney volumes of "
          f"{sum(r.get('scope') == 'volume' for r in volume_rows)} whole-volume rows"
          + ("" if args.volume_rows is None else ": " + ", ".join(f"`{s}`" for s in args.volume_rows)) + ")",
          f"- either flag (`low_confidence` leave-one-case-out, or a whole-scan kidney volume outside that range; "
          f"rows without recorded scan volumes count by `low_confidence` only): failures {either(fails)} of "
          f"{len(fails)}, successes {either(wins)} of {len(wins)}"]
    for note, _, per_row in signals:
        md.append(f"- {note}; leave-one-case-out, failures flagged: {count(per_row, True)} of {len(fails)} "
                  f"({count(per_row, True, True)} that neither other flag catches), successes flagged: "
                  f"{count(per_row, False)} of {len(wins)} ({count(per_row, False, True)} that neither other flag flags)")
    if signals:
        flagged_any = [bool(f or v or any(per_row[i][1] for _, _, per_row in signals)) for i, (_, _, f, v) in enumerate(loo)]
        md.append(f"- any flag: failures {sum(a for a, bad in zip(flagged_any, failed) if bad)} of {len(fails)}, "
                  f"successes {sum(a for a, bad in zip(flagged_any, failed) if not bad)} of {len(wins)}")
    heads = ["model", "domain", "case", "Dice right", "Dice left", "scan volume R / L (mL)", "uncertain_fraction",
             "failure", "threshold without it", "low_confidence", "volume flag"] + [h for _, hs, _ in signals for h in hs]
    md += ["", "| " + " | ".join(heads) + " |", "| --- " * len(heads) + "|"]
    for i, (r, t, flagged, vflag) in enumerate(loo):
        md.append(f"| {r['model']} | {r['domain']} | {r['case']} | {r.get('dice_kidney_right', '-')} | "
                  f"{r.get('dice_kidney_left', '-')} | {r.get('scan_kidney_right_ml', '-')} / "
                  f"{r.get('scan_kidney_left_ml', '-')} | {r['uncertain_fraction']} | {failed[i]} | "
                  f"{t:.3f} | {flagged} | {'-' if vflag is None else vflag} |"
                  + "".join(f" {c} |" for _, _, per_row in signals for c in [*per_row[i][0], per_row[i][1]]))
    args.out.write_text("\n".join(md) + "\n")
    print(json.dumps(settings))


if __name__ == "__main__":
    main()
