"""The kidney threshold of a multiplane MR model, scored on held-out volumes: the rule of
2026-12-05 15:32 UTC (benchmarks/README.md, "The kidney threshold of the shipped pair, chosen on
held-out volumes of a pair trained like it").

    python benchmarks/mr_kidney_threshold.py --model NAME=DIR --tag TEXT
        [--chaos-cases 19 31 34] [--ukat-cases philips_01 ge_01 siemens_01] [--peers]
        [--thresholds 0.3 0.35 ...] [--threads 1]
    python benchmarks/mr_kidney_threshold.py --summarise [--judged chaos:19 chaos:31 ... ukat:ge_01]

Each case is predicted once (:meth:`MRKidneyPipeline.predict`, the model's own inference
settings). A multiplane model with one kidney class labels a voxel kidney exactly when its summed
kidney probability reaches the threshold (:func:`kidneyseg.inference.predict.decide_labels`), so
the labels for every other threshold are ``kidney_probability >= t``; the script checks that
identity at the model's own threshold on every case and stops if it does not hold. Each threshold's
labels then go through :meth:`MRKidneyPipeline.finish` (neck split, kidney assignment, QC) and are
scored as ``mr_generalisation.py`` scores them; rows, with the field ``threshold``, are appended
to ``results/mr_kidney_threshold.jsonl``. ``--peers`` adds Renal Segmentor's two coronal T2
subjects (``peer_examples.py``; a TKV difference against that tool's own result, not an expert).

``--redraw-low-confidence T`` sets ``kidney_threshold_low_confidence`` (a scan flagged
``low_confidence`` is redrawn at T in :meth:`MRKidneyPipeline.finish`), ``off`` clears it; without
the flag the model's own setting applies. Rows record the value applied.

``--summarise`` writes ``results/mr_kidney_threshold.md``: per (model, tag, threshold), D = the
mean Dice and V = the mean absolute volume error (% of the expert's volume) over the kidneys of
the ``--judged`` whole volumes, then each case on its own.

Data: ``../shared/data/chaos_t2`` (CHAOS, CC BY-SA 4.0) and ``../shared/data/ukat_kidney_masks``
(UKRIN Kidney Analysis Toolbox, GPL-3.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kidneyseg.datasets.layouts import chaos_cases, ukat_cases  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.training.data import read_case  # noqa: E402
from mr_generalisation import DATA, RESULTS, expert_labels, load_pipeline, score_result  # noqa: E402

THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)
JUDGED = ("chaos:19", "chaos:31", "chaos:34", "ukat:philips_01", "ukat:ge_01", "ukat:siemens_01")
SIDES = ("kidney_right", "kidney_left")


def labels_at(kidney_p: np.ndarray, labels_c: np.ndarray, own: float, threshold: float) -> np.ndarray:
    """The network labels at ``threshold`` from the kidney probability; checks first that
    ``labels_c`` (made at the model's own threshold ``own``) are ``kidney_p >= own`` on kidney."""
    if not np.array_equal(labels_c == 1, kidney_p >= own):
        raise SystemExit(f"kidney labels differ from kidney_probability >= {own}: the threshold cannot be re-applied "
                         "from the probability for this model")
    return (kidney_p >= threshold).astype(np.uint8)  # auxiliary organ labels are dropped by finish anyway


def kidney_errors(row: dict) -> list[tuple[float, float]]:
    """``(Dice, absolute volume error %)`` of each kidney of a whole-volume row."""
    return [(row[f"dice_{s}"], abs(100 * (row[f"{s}_ml"] - row[f"{s}_ref_ml"]) / row[f"{s}_ref_ml"])) for s in SIDES]


def summarise(rows: list[dict], judged: tuple[str, ...]) -> list[str]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r.get("tag", ""), r["threshold"]), []).append(r)
    lines = ["| model | tag | threshold | judged kidneys | D (mean Dice) | V (mean abs. volume error) | per case: Dice R / L, TKV error |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (model, tag, t), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        pairs = [e for r in rs if f"{r['domain']}:{r['case']}" in judged and r.get("scope") == "volume"
                 for e in kidney_errors(r)]
        d = f"{np.mean([p[0] for p in pairs]):.4f}" if pairs else "-"
        v = f"{np.mean([p[1] for p in pairs]):.1f} %" if pairs else "-"
        cases = []
        for r in rs:
            if r.get("scope") == "volume":
                cases.append(f"{r['case']} {r['dice_kidney_right']:.3f} / {r['dice_kidney_left']:.3f}, "
                             f"{r['total_volume_error_pct']:+.1f} %")
            elif r.get("scope") == "labelled slice":
                cases.append(f"{r['case']} slice {r.get('dice_kidney_right', float('nan')):.3f} / "
                             f"{r.get('dice_kidney_left', float('nan')):.3f}")
            else:
                cases.append(f"{r['case']} TKV {r['tkv_ml']:.0f} mL ({r['tkv_difference_pct']:+.1f} % vs peer)")
        lines.append(f"| {model} | {tag} | {t:.2f} | {len(pairs)} | {d} | {v} | {'; '.join(cases)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--chaos-cases", nargs="*", default=["19", "31", "34", "39"])
    ap.add_argument("--ukat-cases", nargs="*", default=["philips_01", "ge_01", "siemens_01"])
    ap.add_argument("--peers", action="store_true", help="Renal Segmentor's two coronal T2 subjects")
    ap.add_argument("--thresholds", nargs="*", type=float, default=list(THRESHOLDS))
    ap.add_argument("--judged", nargs="*", default=list(JUDGED), metavar="DOMAIN:CASE")
    ap.add_argument("--redraw-low-confidence", default=None, metavar="T|off",
                    help="set kidney_threshold_low_confidence to T (a scan flagged low_confidence is redrawn at T), "
                         "or 'off'; default: the model's own inference.json")
    ap.add_argument("--tag", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "mr_kidney_threshold.jsonl")
    ap.add_argument("--summarise", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.model and not args.summarise:
        score_models(args, torch.__version__)
    rows = [json.loads(line) for line in open(args.out)] if args.out.exists() else []
    md = ["# The kidney threshold on held-out volumes", "",
          "Written by `benchmarks/mr_kidney_threshold.py` from every row of `mr_kidney_threshold.jsonl`"
          + (f" (latest run {rows[-1]['date']}, {rows[-1]['machine']})" if rows else "")
          + f". D and V over the kidneys of the judged whole volumes ({', '.join(args.judged)}); "
          "rule and verdict in benchmarks/README.md.", ""] + summarise(rows, tuple(args.judged))
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")


def score_models(args, torch_version: str) -> None:
    """Predict every case once per ``--model``, finish it at each threshold, append the rows."""
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    machine = f"{platform.machine()}, {args.threads} thread(s), torch {torch_version}"
    items = [("ukat", c) for c in ukat_cases(DATA / "ukat_kidney_masks", MR_KIDNEYS) if c.case_id in set(args.ukat_cases)]
    items += [("chaos", c) for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS) if c.case_id in set(args.chaos_cases)]
    if args.peers:
        from peer_examples import renal_segmentor_cases
        from kidneyseg.io import read_image

        cache = ROOT / "benchmarks" / ".cache" / "peer_examples"
        items += [("peer", c) for c in renal_segmentor_cases(cache)]
    with open(args.out, "a") as f:
        for spec in args.model:
            name, _, folder = spec.partition("=")
            pipe = load_pipeline(folder)
            own = pipe.bundle.inference.kidney_threshold
            if own is None or pipe.bundle.config.kidney_classes != 1:
                raise SystemExit(f"{folder}: needs a kidney threshold and one kidney class")
            if args.redraw_low_confidence is not None:
                redraw = None if args.redraw_low_confidence == "off" else float(args.redraw_low_confidence)
                pipe.bundle = dataclasses.replace(pipe.bundle, inference=dataclasses.replace(
                    pipe.bundle.inference, kidney_threshold_low_confidence=redraw))
            for domain, case in items:
                if domain == "peer":
                    image, ref = read_image(case["image"]), None
                else:
                    image, ref_img = read_case(case)
                    ref = expert_labels(case, ref_img)
                t0 = time.perf_counter()
                image, labels_c, prepared, kidney_p, members = pipe.predict(image)
                predict_s = time.perf_counter() - t0
                for t in args.thresholds:
                    t1 = time.perf_counter()
                    result = pipe.finish(image, labels_at(kidney_p, labels_c, own, t), prepared, t1, kidney_p, members)
                    row = {"model": name, "tag": args.tag, "threshold": t,
                           "kidney_threshold_low_confidence": pipe.bundle.inference.kidney_threshold_low_confidence,
                           "date": when, "machine": machine,
                           "predict_seconds": round(predict_s, 2)}
                    if ref is None:
                        tkv = float(result.volumes_ml["total_ml"])
                        row.update({"domain": domain, "case": case["case"], "scope": "peer TKV",
                                    "tkv_ml": round(tkv, 1), "peer_tkv_ml": case["peer_tkv_ml"],
                                    "tkv_difference_pct": round(100 * (tkv - case["peer_tkv_ml"]) / case["peer_tkv_ml"], 1),
                                    **{k: v for k, v in result.qc.items() if k != "removed_voxels"}})
                    else:
                        row.update(score_result(result, time.perf_counter() - t1, case, image, ref, domain))
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(json.dumps({k: row.get(k) for k in ("case", "threshold", "dice_kidney_right", "dice_kidney_left",
                                                              "total_volume_error_pct", "tkv_difference_pct")}),
                          flush=True)


if __name__ == "__main__":
    main()
