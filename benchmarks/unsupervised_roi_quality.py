"""How much of the unsupervised pipeline's error is the region of interest (issue 4).

    python benchmarks/unsupervised_roi_quality.py [--rows benchmarks/results/unsupervised.jsonl]

For each CHAOS T2 case, the pipeline's own first steps are re-run
(``UnsupervisedKidneyPipeline.regions`` with the default ``UnsupervisedConfig``: N4, then
``detect_kidney_rois``; no label is seen) and each kidney's box is
scored against the expert mask:

* box recall: the fraction of the expert kidney inside the box;
* seed precision: the fraction of the box's bright seed component that is that kidney.

A kidney's ROI counts as correct when box recall >= 0.95 and seed precision >= 0.8 (a rule
set from the box scores alone, before the DSC rows were joined). The DSC rows of the benchmark run (``--rows``, written
by ``benchmarks/unsupervised.py``) are then split by that flag, per method, so the clustering
can be compared with Otsu and watershed on the kidneys whose box is right. The ROI is
deterministic, so it is the same box the benchmark rows were made with (same code, same
defaults).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.io import read_image, to_canonical  # noqa: E402
from kidneyseg.pipelines.unsupervised import UnsupervisedConfig, UnsupervisedKidneyPipeline  # noqa: E402

CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"
MIN_RECALL, MIN_PRECISION = 0.95, 0.8
SIDES = {"right": (2, "kidney_right"), "left": (3, "kidney_left")}  # CHAOS label, benchmark region


def roi_quality(case: str, config: UnsupervisedConfig) -> dict[str, dict]:
    """Box recall and seed precision per side for CHAOS case ``case`` (missing side: zeros)."""
    found = UnsupervisedKidneyPipeline(config, device="cpu").regions(read_image(CHAOS / f"image_{case}.nii.gz")).found
    labels, _ = to_canonical(read_image(CHAOS / f"label_{case}.nii.gz"))
    lab = np.asarray(labels.array)
    out = {side: {"box_recall": 0.0, "seed_precision": 0.0, "seed_ml": 0.0} for side in SIDES}
    for roi in found.rois:
        ref = lab == SIDES[roi.side][0]
        inside = ref[roi.slices]
        out[roi.side] = {"box_recall": float(inside.sum() / max(ref.sum(), 1)),
                         "seed_precision": float(inside[roi.seed].mean()) if roi.seed.any() else 0.0,
                         "seed_ml": round(roi.component_ml, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, default=ROOT / "benchmarks" / "results" / "unsupervised.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "unsupervised_roi_quality.md")
    args = ap.parse_args()
    if not CHAOS.is_dir():
        sys.exit(f"{CHAOS}: CHAOS T2 data not found (../shared beside the repository)")
    if not args.rows.is_file():
        sys.exit(f"{args.rows}: no benchmark rows; run benchmarks/unsupervised.py first")
    rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    config = UnsupervisedConfig()
    cases = sorted({r["case"][6:] for r in rows if r["case"].startswith("chaos_")}, key=int)
    quality = {}
    for case in cases:
        quality[case] = roi_quality(case, config)
        print(case, {s: {k: round(v, 2) for k, v in q.items()} for s, q in quality[case].items()}, flush=True)
    ok = {(c, SIDES[s][1]): q["box_recall"] >= MIN_RECALL and q["seed_precision"] >= MIN_PRECISION
          for c, sides in quality.items() for s, q in sides.items()}

    lines = [f"# Unsupervised pipeline: DSC by ROI quality ({dt.date.today().isoformat()})", "",
             f"Machine: {platform.processor() or platform.machine()}, CPU only. ROI re-run with the default "
             f"`UnsupervisedConfig` on the {len(cases)} CHAOS T2 cases of `{args.rows.name}`; correct ROI = box recall "
             f">= {MIN_RECALL} and seed precision >= {MIN_PRECISION}.", "",
             "| case | side | box recall | seed precision | seed mL | ROI correct |", "| --- | --- | --- | --- | --- | --- |"]
    for c, sides in quality.items():
        for s, q in sides.items():
            lines.append(f"| {c} | {s} | {q['box_recall']:.2f} | {q['seed_precision']:.2f} | {q['seed_ml']:.0f} | "
                         f"{'yes' if ok[(c, SIDES[s][1])] else '**no**'} |")
    lines += ["", "| method | all kidneys: n, mean DSC | ROI correct: n, mean (median) DSC | ROI wrong: n, mean DSC |",
              "| --- | --- | --- | --- |"]
    for tag in dict.fromkeys(r["tag"] for r in rows):
        sel = [r for r in rows if r["tag"] == tag and r["case"].startswith("chaos_")]
        good = [r["dice"] for r in sel if ok.get((r["case"][6:], r["region"]))]
        bad = [r["dice"] for r in sel if not ok.get((r["case"][6:], r["region"]))]
        if not sel:
            continue
        lines.append(f"| {tag} | {len(sel)}, {np.mean([r['dice'] for r in sel]):.3f} | "
                     f"{len(good)}, {np.mean(good) if good else float('nan'):.3f} ({np.median(good) if good else float('nan'):.3f}) | "
                     f"{len(bad)}, {np.mean(bad) if bad else float('nan'):.3f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-(len(lines) - lines.index('| method | all kidneys: n, mean DSC | ROI correct: n, mean (median) DSC | ROI wrong: n, mean DSC |')):]))


if __name__ == "__main__":
    main()
