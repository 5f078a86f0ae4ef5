"""Kidney components split at narrow necks: the rule of 2026-12-05 13:13 UTC (benchmarks/README.md,
"Kidney components split at narrow necks").

    python benchmarks/mr_neck_split.py --references              # step 1: r on the expert masks alone
    python benchmarks/mr_neck_split.py --model NAME=DIR --neck-mm R --tag TEXT
        [--ukat-cases ...] [--chaos-cases ...] [--no-ukat] [--threads 1]
    python benchmarks/mr_neck_split.py --summarise

``--references``: every expert kidney of the 15 CHAOS cases and the 3 whole ukat scans passed
through :func:`kidneyseg.postprocess.kidneys.split_at_necks` (both kidneys of a scan together as
the foreground, on the scan's own grid) and :func:`kidneyseg.postprocess.assign_kidneys` (5 mm
core ranking, the body midline), for r = 4, 6, 8 mm: the share of each kidney's voxels that keep
its label. Written to ``results/mr_neck_split_references.md``.

``--model``: each case is predicted once (:meth:`MRKidneyPipeline.predict`, the model's own
inference settings) and post-processed three ways (:meth:`MRKidneyPipeline.finish`): ``none``
(today), ``core`` (split at R mm, 5 mm core ranking) and ``probability`` (split at R mm, ranked by
summed kidney probability). Rows, scored as ``mr_generalisation.py`` scores them, are appended to
``results/mr_neck_split.jsonl`` with the field ``variant``; ``results/mr_neck_split.md``
summarises every row: per (model, tag, variant), the validation score (Philips), the test score
(GE + Siemens) and the CHAOS mean, as the rule defines them.

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
from kidneyseg.io.orientation import to_canonical  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.pipelines.mr_t2 import CORE_DEPTH_MM  # noqa: E402
from kidneyseg.postprocess.kidneys import assign_kidneys, body_midline_x_mm, split_at_necks  # noqa: E402
from kidneyseg.training.data import read_case  # noqa: E402
from mr_generalisation import DATA, RESULTS, expert_labels, load_pipeline, score_result  # noqa: E402

VARIANTS = {"none": (None, "core"), "core": (True, "core"), "probability": (True, "probability")}
DEPTHS_MM = (4.0, 6.0, 8.0)


def reference_rows() -> list[dict]:
    """Per expert kidney and depth: the share of its voxels that keep its label."""
    cases = [("chaos", c) for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS)]
    cases += [("ukat", c) for c in ukat_cases(DATA / "ukat_kidney_masks", MR_KIDNEYS, whole_only=True)]
    rows = []
    for domain, case in cases:
        image, ref_img = read_case(case)
        canon, _ = to_canonical(image)
        ref, _ = to_canonical(image.with_array(expert_labels(case, ref_img)))
        labels = np.asarray(ref.array, dtype=np.uint8)
        midline = body_midline_x_mm(canon.array, canon.affine)
        for depth in DEPTHS_MM:
            regions = split_at_necks(labels > 0, canon.affine, depth)
            out = assign_kidneys(labels, canon.affine, MR_KIDNEYS, midline_x_mm=midline, core_depth_mm=CORE_DEPTH_MM,
                                 regions=regions).labels
            for value, name in MR_KIDNEYS.items():
                kidney = labels == value
                if kidney.any():
                    rows.append({"domain": domain, "case": case.case_id, "kidney": name, "depth_mm": depth,
                                 "regions": int(np.unique(regions[kidney]).size),
                                 "kept": round(float((out[kidney] == value).mean()), 4)})
    return rows


def write_references(rows: list[dict], when: str) -> None:
    lines = ["# Neck split on the expert masks (step 1 of the rule)", "",
             f"`benchmarks/mr_neck_split.py --references`, {when}. Each of the 36 expert kidneys (15 CHAOS, "
             "3 whole ukat scans) through `split_at_necks` + `assign_kidneys` (5 mm core ranking, body midline): "
             "the share of its voxels that keep its label (at least 0.99 for every kidney to pass).", "",
             "| r (mm) | kidneys >= 0.99 | smallest share kept (kidney) | kidneys whose voxels lie in more than one region (regions) |",
             "| --- | --- | --- | --- |"]
    for depth in DEPTHS_MM:
        rs = [r for r in rows if r["depth_mm"] == depth]
        worst = min(rs, key=lambda r: r["kept"])
        cut = [f"{r['domain']} {r['case']} {r['kidney']} ({r['regions']})" for r in rs if r["regions"] > 1]
        lines.append(f"| {depth:g} | {sum(r['kept'] >= 0.99 for r in rs)} of {len(rs)} | {worst['kept']:.4f} "
                     f"({worst['domain']} {worst['case']} {worst['kidney']}) | {', '.join(cut) or 'none'} |")
    passing = [d for d in DEPTHS_MM if all(r["kept"] >= 0.99 for r in rows if r["depth_mm"] == d)]
    lines += ["", f"Chosen by the rule: r = {max(passing):g} mm." if passing else "No depth passes: not adopted."]
    (RESULTS / "mr_neck_split_references.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def mean_dice(rows: list[dict]) -> float | None:
    vals = [r[k] for r in rows for k in ("dice_kidney_right", "dice_kidney_left") if r.get(k) is not None]
    return float(np.mean(vals)) if vals else None


def domain_score(rows: list[dict], prefixes: tuple[str, ...]) -> float | None:
    """The rule's score: the mean of (mean kidney Dice of the whole scans) and (of the labelled slices)."""
    mine = [r for r in rows if r["domain"] == "ukat" and r["case"].startswith(prefixes)]
    parts = [mean_dice([r for r in mine if r["scope"] == s]) for s in ("volume", "labelled slice")]
    parts = [p for p in parts if p is not None]
    return float(np.mean(parts)) if parts else None


def summarise(rows: list[dict]) -> list[str]:
    lines = ["| model | tag | variant | validation (Philips) | test (GE + Siemens) | CHAOS mean Dice (n) | "
             "whole ukat scans: Dice right / left, left length (mm) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r.get("tag", ""), r["variant"]), []).append(r)
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for (model, tag, variant), rs in groups.items():
        chaos = [r for r in rs if r["domain"] == "chaos"]
        whole = "; ".join(f"{r['case']} {r['dice_kidney_right']:.3f} / {r['dice_kidney_left']:.3f}, "
                          f"{r.get('scan_kidney_left_length_mm', '-')}" for r in rs
                          if r["domain"] == "ukat" and r["scope"] == "volume")
        lines.append(f"| {model} | {tag} | {variant} | {fmt(domain_score(rs, ('philips',)))} | "
                     f"{fmt(domain_score(rs, ('ge', 'siemens')))} | {fmt(mean_dice(chaos))} ({len(chaos)}) | {whole or '-'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--references", action="store_true", help="step 1: r on the expert masks")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--neck-mm", type=float, default=None, help="the depth r chosen in step 1")
    ap.add_argument("--chaos-cases", nargs="*", default=["39"])
    ap.add_argument("--ukat-cases", nargs="*", default=None)
    ap.add_argument("--no-ukat", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "mr_neck_split.jsonl")
    ap.add_argument("--summarise", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    if args.references:
        write_references(reference_rows(), when)
        return
    if args.model and args.neck_mm is None:
        ap.error("--model needs --neck-mm (the depth chosen by --references)")
    machine = f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
    ukat = [] if args.no_ukat else [c for c in ukat_cases(DATA / "ukat_kidney_masks", MR_KIDNEYS)
                                    if args.ukat_cases is None or c.case_id in set(args.ukat_cases)]
    chaos = [c for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS) if c.case_id in set(args.chaos_cases)]
    with open(args.out, "a") as f:
        for spec in args.model:
            name, _, folder = spec.partition("=")
            pipe = load_pipeline(folder)
            base = pipe.bundle
            for domain, cases in (("ukat", ukat), ("chaos", chaos)):
                for case in cases:
                    image, ref_img = read_case(case)
                    ref = expert_labels(case, ref_img)
                    t0 = time.perf_counter()
                    image, labels_c, prepared, kidney_p, members = pipe.predict(image)
                    predict_s = time.perf_counter() - t0
                    for variant, (split, ranking) in VARIANTS.items():
                        settings = dataclasses.replace(base.inference, component_ranking=ranking,
                                                       neck_split_mm=args.neck_mm if split else None)
                        pipe.bundle = dataclasses.replace(base, inference=settings)
                        t1 = time.perf_counter()
                        result = pipe.finish(image, labels_c.copy(), prepared, t1, kidney_p, members)
                        row = {"model": name, "tag": args.tag, "variant": variant, "neck_split_mm": settings.neck_split_mm,
                               "date": when, "machine": machine, "predict_seconds": round(predict_s, 2),
                               **score_result(result, time.perf_counter() - t1, case, image, ref, domain)}
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                        print(json.dumps({k: row.get(k) for k in ("case", "variant", "dice_kidney_right",
                                                                  "dice_kidney_left", "scan_kidney_left_length_mm")}),
                              flush=True)
            pipe.bundle = base
    rows = [json.loads(line) for line in open(args.out)] if args.out.exists() else []
    md = ["# Kidney components split at narrow necks", "",
          "Written by `benchmarks/mr_neck_split.py` from every row of `mr_neck_split.jsonl`"
          + (f" (latest run {rows[-1]['date']}, {rows[-1]['machine']})" if rows else "")
          + ". Validation / test = the mean of (mean kidney Dice of the whole ukat scans) and (of the labelled "
          "slices), Philips / GE + Siemens; rule and verdict in benchmarks/README.md.", ""] + summarise(rows)
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
