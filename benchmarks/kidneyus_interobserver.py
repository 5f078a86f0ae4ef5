"""Inter-observer agreement of the two sonographers of the Open Kidney Ultrasound Data Set.

    python benchmarks/kidneyus_interobserver.py [--tolerance-px 5] [--out benchmarks/results/kidneyus_interobserver.md]

Data: ../shared/data/kidneyus_labels (Singla et al., ASMUS 2023; CC BY-NC-SA): the capsule masks
of sonographer 1 (`reviewed_masks_1/capsule`) and sonographer 2 (`reviewed_masks_2/capsule`), 534
images, plus the multi-class `regions/` masks. Sonographer 1 is taken as the reference.

The images carry no pixel spacing, so distances are in pixels (spacing 1 x 1) and the surface
Dice tolerance is in pixels. This is the human ceiling for any 2D ultrasound kidney model judged
on this data set (seed 003 reports its model's precision, recall, Jaccard, F1 and accuracy).
The view (sagittal / transverse) comes from sonographer 1's VIA CSV file attributes.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.metrics import METRICS, evaluate_labels, label_regions, summarise  # noqa: E402
from kidneyseg.metrics.evaluate import Region  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "kidneyus_labels"
SHOW = ("dice", "jaccard", "precision", "recall", "accuracy", "f1", "hd95_mm", "assd_mm", "surface_dice")


def load(path: Path) -> np.ndarray:
    a = np.asarray(PILImage.open(path))
    return a if a.ndim == 2 else a[..., 0]


def views() -> dict[str, str]:
    out = {}
    with open(DATA / "reviewed_labels_1.csv", newline="") as f:
        for row in csv.DictReader(f):
            try:
                out[row["filename"]] = str(json.loads(row["file_attributes"]).get("View", "")).strip().lower() or "unknown"
            except json.JSONDecodeError:
                out[row["filename"]] = "unknown"
    return out


def table(rows: list[dict], title: str) -> list[str]:
    """Markdown table: mean ± sample std (median) per metric; with infinite values (one
    sonographer drew the structure, the other did not) the mean is inf, so the count of
    them and the mean of the finite values are shown instead of hiding them."""
    head = [m.replace("_mm", " (px)") for m in SHOW]
    lines = [f"### {title}", "", "| region | n | " + " | ".join(head) + " |", "| --- | --- |" + " --- |" * len(SHOW)]
    stats = {(s["region"], s["metric"]): s for s in summarise(rows, METRICS)}
    for region in dict.fromkeys(r["region"] for r in rows):
        n = stats[(region, "dice")]["n"]
        cells = []
        for m in SHOW:
            s = stats[(region, m)]
            if s["n_inf"]:
                finite = np.array([r[m] for r in rows if r["region"] == region and np.isfinite(r[m])])
                cells.append(f"inf in {s['n_inf']}; finite {finite.mean():.3f} ± {finite.std(ddof=1):.3f} "
                             f"(median {s['median']:.3f})")
            else:
                cells.append(f"{s['mean']:.3f} ± {s['std']:.3f} (median {s['median']:.3f})")
        lines.append(f"| {region} | {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tolerance-px", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kidneyus_interobserver.md")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"kidneyus_interobserver: {DATA} not found")
    names = sorted(p.name for p in (DATA / "reviewed_masks_1" / "capsule").glob("*.png"))
    view_of = views()
    t0 = time.perf_counter()
    capsule, regions = [], []
    for name in names:
        a = load(DATA / "reviewed_masks_1" / "capsule" / name) > 0
        b = load(DATA / "reviewed_masks_2" / "capsule" / name) > 0
        if a.shape != b.shape:
            print(f"{name}: sonographer masks differ in shape {a.shape} vs {b.shape}; skipped", file=sys.stderr)
            continue
        # sonographer 2 plays the "prediction", sonographer 1 the reference
        for row in evaluate_labels(b.view(np.uint8), a.view(np.uint8), (1.0, 1.0),
                                   [Region("capsule", (1,), args.tolerance_px)]):
            row["case"], row["view"] = name, view_of.get(name, "unknown")
            capsule.append(row)
        ra = load(DATA / "reviewed_masks_1" / "regions" / name)
        rb = load(DATA / "reviewed_masks_2" / "regions" / name)
        if ra.shape == rb.shape:
            for row in evaluate_labels(rb, ra, (1.0, 1.0), label_regions(range(1, 4), {}, args.tolerance_px)):
                row["case"] = name
                regions.append(row)
    seconds = time.perf_counter() - t0
    lines = ["# Inter-observer agreement, Open Kidney Ultrasound Data Set (sonographer 2 vs sonographer 1)", "",
             f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {len(names)} images; distances in pixels; "
             f"surface Dice tolerance {args.tolerance_px:g} px; evaluation took {seconds:.1f} s.",
             "Values: mean ± sample std (median). `inf in k`: in k images one sonographer drew the structure "
             "and the other did not (distance infinite); the finite mean is then shown beside the count.", ""]
    lines += table(capsule, "Capsule (whole kidney), all images")
    for view in sorted({r["view"] for r in capsule}):
        sub = [r for r in capsule if r["view"] == view]
        lines += table([dict(r, region=f"capsule, {view}") for r in sub], f"Capsule, view: {view}")
    lines += table(regions,
                   "Regions masks by label value (values 1-3 of `regions/`; the data set does not state which "
                   "structure each value is)")
    worst = sorted(capsule, key=lambda r: r["dice"])[:5]
    lines += ["Lowest capsule Dice: " + ", ".join(f"{r['case']} {r['dice']:.3f}" for r in worst), ""]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
