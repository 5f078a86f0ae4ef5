"""Choose the multiprotocol model's inference settings (test-time shifts, kidney threshold) on
held-out predictions, by the rule written in benchmarks/README.md ("Inference settings of the
shipped multiprotocol pair") before any candidate was scored.

    python benchmarks/mr_multiprotocol_settings.py --select NAME=DIR \
        --guard NAME=DIR:CASE,CASE,... [--guard ...] [--test] [--threads 2]

``--select``: a model of the shipped recipe that never saw ukat data (``ens_20k``), scored on
the 17 Philips scans (the validation domain). ``--guard``: the shipped training's CHAOS
cross-validation pairs, each on its held-out CHAOS cases. Every candidate (TTA x threshold,
the same grid as ``mr_inference_settings.py``) is applied to the same loaded networks by
replacing the pipeline's :class:`~kidneyseg.inference.InferenceConfig`; each case is segmented
and scored by ``mr_generalisation.score_case`` (the full post-processing, Dice on the input grid
or on the labelled slice).

The winner: the best Philips score (mean of the right and left mean Dice) among settings whose
CHAOS mean Dice (both kidneys, all guard cases) is at least the plain pass's minus 0.01; ties
within 0.005 go to fewer passes, then the higher threshold. ``--test`` then scores the winner
and the plain pass once on the test domain (GE and Siemens). Rows are appended to
``benchmarks/results/mr_multiprotocol_settings.jsonl``; the selection is written to the ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mr_generalisation import DATA, RESULTS, load_pipeline, score_case  # noqa: E402
from mr_inference_settings import THRESHOLDS, TTA  # noqa: E402  (the same grid as the T2 model's)

from kidneyseg.datasets.layouts import chaos_cases, ukat_cases  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402

CHAOS_MARGIN, TIE, SHIP_MARGIN = 0.01, 0.005, 0.02
OUT = RESULTS / "mr_multiprotocol_settings.jsonl"


def candidates() -> list[tuple[str, float | None]]:
    return [(tta, thr) for tta in TTA for thr in THRESHOLDS]


def label(tta: str, thr: float | None) -> str:
    return f"{tta}/{'argmax' if thr is None else thr}"


def apply_setting(pipe, tta: str, thr: float | None) -> None:
    """Replace the loaded pipeline's inference settings (QC settings kept)."""
    inf = pipe.bundle.inference.replace(tta_shifts_px=TTA[tta].shifts_px, kidney_threshold=thr)
    pipe.bundle = dataclasses.replace(pipe.bundle, inference=inf)


def mean_dice(rows: list[dict]) -> float:
    """Mean of the right and left kidneys' mean Dice."""
    sides = [np.mean([r[f"dice_{s}"] for r in rows if r.get(f"dice_{s}") is not None])
             for s in ("kidney_right", "kidney_left")]
    return float(np.mean(sides))


def choose(philips: dict[str, float], chaos: dict[str, float]) -> str:
    """The rule: best Philips score among settings within CHAOS_MARGIN of the plain pass on CHAOS;
    ties within TIE go to fewer passes, then the higher threshold (argmax counts as highest)."""
    plain = label("none", None)
    allowed = [c for c in candidates() if chaos[label(*c)] >= chaos[plain] - CHAOS_MARGIN]
    best = max(philips[label(*c)] for c in allowed)
    tied = [c for c in allowed if philips[label(*c)] >= best - TIE]
    tied.sort(key=lambda c: (TTA[c[0]].passes, -(1.0 if c[1] is None else c[1])))
    return label(*tied[0])


def score(pipe, name: str, tag: str, cases: list, domain: str, tta: str, thr: float | None, f, when, machine) -> list[dict]:
    apply_setting(pipe, tta, thr)
    rows = []
    for case in cases:
        row = {"model": name, "setting": label(tta, thr), "tag": tag, "date": when, "machine": machine,
               **score_case(pipe, case, domain)}
        f.write(json.dumps(row) + "\n")
        f.flush()
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--select", required=True, metavar="NAME=DIR")
    ap.add_argument("--guard", action="append", default=[], metavar="NAME=DIR:CASES")
    ap.add_argument("--test", action="store_true", help="then score the winner and the plain pass on GE and Siemens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    machine = f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
    ukat = ukat_cases(DATA / "ukat_kidney_masks", MR_KIDNEYS)
    philips = [c for c in ukat if c.case_id.startswith("philips")]
    test = [c for c in ukat if not c.case_id.startswith("philips")]
    chaos_all = {c.case_id: c for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS)}
    sel_name, _, sel_dir = args.select.partition("=")
    sel = load_pipeline(sel_dir)
    guards = []
    for g in args.guard:
        name, _, rest = g.partition("=")
        folder, _, cases = rest.rpartition(":")
        guards.append((name, load_pipeline(folder), [chaos_all[c] for c in cases.split(",")]))
    p_score, c_score, c_rows = {}, {}, {}
    with open(args.out, "a") as f:
        for tta, thr in candidates():
            key = label(tta, thr)
            rows = score(sel, sel_name, "validation domain (Philips)", philips, "ukat", tta, thr, f, when, machine)
            p_score[key] = mean_dice(rows)
            c_rows[key] = [r for name, pipe, cases in guards
                           for r in score(pipe, name, "CHAOS guard", cases, "chaos", tta, thr, f, when, machine)]
            c_score[key] = mean_dice(c_rows[key])
            print(f"{key}: Philips {p_score[key]:.4f}  CHAOS {c_score[key]:.4f}", flush=True)
        winner = choose(p_score, c_score)
        plain = label("none", None)
        t_score = {}
        if args.test:
            for key in dict.fromkeys([plain, winner]):
                tta, thr = key.split("/")
                rows = score(sel, sel_name, "TEST domain (GE, Siemens)", test, "ukat", tta,
                             None if thr == "argmax" else float(thr), f, when, machine)
                t_score[key] = mean_dice(rows)
    lines = ["# Inference settings of the multiprotocol recipe, chosen on held-out rows", "",
             f"Written by `benchmarks/mr_multiprotocol_settings.py` ({when}, {machine}); rule in benchmarks/README.md. "
             f"Philips: `{sel_name}` on the 17 Philips scans (validation domain). CHAOS: "
             + ", ".join(f"`{n}` on {', '.join(c.case_id for c in cs)}" for n, _, cs in guards)
             + ". Score: mean of the right and left mean Dice.", "",
             "| setting (TTA / threshold) | passes | Philips | CHAOS | CHAOS right / left |", "| --- | --- | --- | --- | --- |"]
    for tta, thr in candidates():
        key = label(tta, thr)
        rs = c_rows[key]
        sides = " / ".join(f"{np.mean([r[f'dice_{s}'] for r in rs]):.3f}" for s in ("kidney_right", "kidney_left"))
        lines.append(f"| {key}{' (winner)' if key == winner else ''} | {TTA[tta].passes} | {p_score[key]:.3f} | "
                     f"{c_score[key]:.3f} | {sides} |")
    gain = p_score[winner] - p_score[plain]
    lines += ["", f"Winner: **{winner}**, Philips {p_score[winner]:.3f} against the plain pass's {p_score[plain]:.3f} "
              f"(gain {gain:+.3f}; shipping needs >= {SHIP_MARGIN})."]
    if t_score:
        lines += ["Test domain (GE, Siemens, 6 scans), scored once: " + ", ".join(f"{k} {v:.3f}" for k, v in t_score.items()) + "."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2:]))


if __name__ == "__main__":
    main()
