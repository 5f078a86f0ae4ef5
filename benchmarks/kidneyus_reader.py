"""Open Kidney Ultrasound reader: do the VIA CSV polygons, filled, reproduce the published masks?

    python benchmarks/kidneyus_reader.py [--out benchmarks/results/kidneyus_reader.md]

Data: ../shared/data/kidneyus_labels (Singla et al., ASMUS 2023; CC BY-NC-SA). For every image
and sonographer, the capsule polygons of the CSV are filled with
``skimage.draw.polygon2mask`` (``kidneyseg.datasets.kidneyus.Annotation.mask``) and compared
with the published ``capsule/`` PNG (Dice; both empty counts as agreement), and likewise the
cortex / medulla / central echo complex polygons with the ``regions/`` PNG values 3 / 2 / 1.
Also reported: rows whose file attributes contradict the image's first row, and the sizes of
the seeded patient-level split.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.datasets.kidneyus import REGION_LABELS, KidneyUSDataset  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "kidneyus_labels"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kidneyus_reader.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    ds = KidneyUSDataset.load(DATA)
    scores: dict[str, list[tuple[float, str, int]]] = {"capsule": [], **{n: [] for n in REGION_LABELS.values()}}
    for name, case in ds.cases.items():
        hw = case.shape_hw()
        for k, ann in case.annotations.items():
            scores["capsule"].append((dice(ann.mask("capsule", hw), case.capsule(f"sonographer{k}")), name, k))
            regions = case.regions(k)
            for value, anatomy in REGION_LABELS.items():
                scores[anatomy].append((dice(ann.mask(anatomy, hw), regions == value), name, k))
    seconds = time.perf_counter() - t0
    lines = ["# Open Kidney US reader: CSV polygons vs published masks", "",
             f"Date {dt.date.today()}; {len(ds.cases)} images x 2 sonographers; {seconds:.0f} s on this machine's CPU.", "",
             "| structure | n | mean Dice | median | min | n < 0.98 | worst (image, sonographer) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    result = {}
    for anatomy, vals in scores.items():
        d = np.asarray([v[0] for v in vals])
        worst = sorted(vals)[:3]
        lines.append(f"| {anatomy} | {len(d)} | {d.mean():.4f} | {np.median(d):.4f} | {d.min():.4f} | {(d < 0.98).sum()} | "
                     + ", ".join(f"{n} ({k}): {v:.3f}" for v, n, k in worst) + " |")
        result[anatomy] = {"n": len(d), "mean": float(d.mean()), "median": float(np.median(d)), "min": float(d.min()),
                           "below_0.98": int((d < 0.98).sum()), "worst": [[n, k, v] for v, n, k in worst]}
    conflicts = sorted({(p.path.name, p.reason.split(":")[0]) for p in ds.problems if not p.skipped})
    split = ds.split(0)
    lines += ["", f"Images whose CSV rows carry contradicting file attributes (view, comments): {len(conflicts)} "
              "(first row kept): " + ", ".join(f"{n} in {f}" for f, n in conflicts[:6]) + (" ..." if len(conflicts) > 6 else ""),
              "", "Seeded patient-level split (seed 0, seed 003's 295/60/159 proportions): "
              + ", ".join(f"{k} {len(v)}" for k, v in split.items()) + "."]
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"structures": result, "attribute_conflicts": conflicts,
                                                     "split_sizes": {k: len(v) for k, v in split.items()}}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
