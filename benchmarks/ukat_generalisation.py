"""Generalisation of the shipped MR model to other scanners, contrast and orientation.

    python benchmarks/ukat_generalisation.py [--model DIR]

Data: ../shared/data/ukat_kidney_masks (UKRIN Kidney Analysis Toolbox, GPL-3.0), the three scans
whose masks cover the whole kidney: ge_01 (GE 1.5 T), philips_01 (Philips 3 T), siemens_01
(Siemens 3 T). They are coronal gradient-echo magnitude images (first echo of a B0 field-map
scan), not T2: a different contrast, orientation and scanner from the CHAOS training data.
The reference is roi-R as label 1 (right) and roi-L as label 2 (left); the masks were drawn by
the ukat developers. Prints Dice, HD95 and volumes per kidney, and whether the sides came out
right.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.api import segment  # noqa: E402
from kidneyseg.io import axcodes, read_image  # noqa: E402
from kidneyseg.metrics import MR_KIDNEY_REGIONS, evaluate_labels  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ukat_kidney_masks"
SCANS = ("ge_01", "philips_01", "siemens_01")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: shipped)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ukat_generalisation.md")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"ukat_generalisation: {DATA} not found")
    lines = ["# Shipped MR model on ukat scans (other scanners, coronal gradient echo)", "",
             f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; model: {args.model or 'shipped'}.", "",
             "| scan | orientation | spacing (mm) | Dice right | Dice left | HD95 right (mm) | HD95 left (mm) | "
             "volume right pred / ref (mL) | volume left pred / ref (mL) | kidneys found | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for scan in SCANS:
        folder = DATA / scan
        image_path = next(p for p in folder.glob("*_e1.nii.gz"))
        stem = image_path.name[: -len(".nii.gz")]
        image = read_image(image_path, dtype=np.float32)
        right = read_image(folder / f"{stem}_roi-R.nii.gz").array > 0
        left = read_image(folder / f"{stem}_roi-L.nii.gz").array > 0
        ref = np.zeros(image.shape, np.uint8)
        ref[right] = 1
        ref[left] = 2
        t0 = time.perf_counter()
        result = segment(image, model=args.model, device="cpu")
        seconds = time.perf_counter() - t0
        rows = {r["region"]: r for r in evaluate_labels(result.mask.array, ref, image.spacing_mm, MR_KIDNEY_REGIONS,
                                                         voxel_volume_ml=image.voxel_volume_ml)}
        r, le = rows["kidney_right"], rows["kidney_left"]
        lines.append(
            f"| {scan} | {''.join(axcodes(image.affine))} | {', '.join(f'{s:.3g}' for s in image.spacing_mm)} | "
            f"{r['dice']:.3f} | {le['dice']:.3f} | {r['hd95_mm']:.1f} | {le['hd95_mm']:.1f} | "
            f"{r['volume_pred_ml']:.0f} / {r['volume_ref_ml']:.0f} | {le['volume_pred_ml']:.0f} / {le['volume_ref_ml']:.0f} | "
            f"{result.qc['kidney_count']} | {seconds:.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
