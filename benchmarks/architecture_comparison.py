"""Which network for MR kidneys on CPU? Train variants on the same cross-validation folds
and compare held-out Dice, training time and inference time.

    python benchmarks/architecture_comparison.py --folds 0 1 --out runs/compare [--variants ...]

Variants (all 5 folds of the CHAOS split are defined by the shipped config's seed; case 39
is excluded as in the shipped model):
  2.5d        the shipped design: 2D U-Net, slice + 1 neighbour each side, one kidney class
  2d          the same with no neighbours (plain 2D)
  per-side    2.5D but with separate right/left classes learnt by the network
  3d          3D U-Net, patches 128 x 128 x 16, in-plane-only pooling at the top two levels,
              sliding-window inference; same wall-clock budget as 2.5D (fewer iterations)
Resumable: a variant/fold with a training_summary.json is not retrained. The 2.5d row may come
from the shipped model's own cross-validation (``--shipped-cv``: same config, same folds, same
seed, so retraining it would repeat that run). Writes benchmarks/results/architecture_comparison.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.specs.mr_unet import TrainConfig  # noqa: E402
from kidneyseg.training.trainer import train  # noqa: E402
from kidneyseg.validation import validate_mr  # noqa: E402

CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"
BASE = dict(dataset=str(CHAOS), exclude_cases=("39",), device="cpu")
VARIANTS = {
    "2.5d": dict(),
    "2d": dict(context_slices=0),
    "per-side": dict(merge_sides=False),
    "3d": dict(spatial_dims=3, patch_size=(128, 128, 16), batch_size=2, iterations=600),
}


def _shipped_cv(folds: list[int]) -> dict:
    """The shipped model's held-out rows for ``folds`` in the training_summary shape."""
    model = ROOT / "src" / "kidneyseg" / "assets" / "models" / "mr_t2_kidney"
    cv = json.loads((model / "cv_summary.json").read_text())
    config = json.loads((model / "config.json").read_text())
    rows = [c for c in cv["cases"] if int(c["fold"].removeprefix("fold")) in folds]
    return {"validation": rows, "train_seconds": float("nan"), "iterations": config["iterations"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "compare")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--existing", nargs="*", default=[], help="VARIANT=FOLDDIR pairs of runs made elsewhere "
                    "with the same config (e.g. 2.5d=runs/fold0)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--shipped-cv", action="store_true", help="take the 2.5d rows from the shipped model's "
                    "cv_summary.json instead of training 2.5d again")
    args = ap.parse_args()
    existing: dict[tuple[str, int], Path] = {}
    for item in args.existing:
        name, path = item.split("=", 1)
        cfg = json.loads((Path(path) / "config.json").read_text())
        existing[(name, int(cfg["fold"]))] = Path(path)
    results: dict[str, list[dict]] = {}
    for name in args.variants:
        if name == "2.5d" and args.shipped_cv:
            results[name] = [_shipped_cv(args.folds)]
            continue
        for fold in args.folds:
            folder = existing.get((name, fold), args.out / name / f"fold_{fold}")
            if not (folder / "training_summary.json").exists() and not args.report_only:
                cfg = TrainConfig(**BASE, **VARIANTS[name], fold=fold, num_threads=args.threads)
                train(cfg, folder, progress=False, validate=validate_mr)
            if (folder / "training_summary.json").exists():
                s = json.loads((folder / "training_summary.json").read_text())
                results.setdefault(name, []).append(s)
    lines = [f"# Network comparison for MR kidneys ({dt.date.today().isoformat()})", "",
             f"CHAOS T2, folds {args.folds} of the shipped 5-fold split (held-out cases pooled), CPU "
             f"({os.cpu_count()} cores; each training used {args.threads} thread(s) while another "
             "training shared the machine), torch " + torch.__version__ + ".", "",
             "| variant | cases | Dice right mean (min) | Dice left mean (min) | train min | iterations | "
             "segment s/case |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in results.items():
        rows = [r for s in runs for r in s.get("validation", [])]
        if not rows:
            continue
        dr = np.array([r["dice_kidney_right"] for r in rows])
        dl = np.array([r["dice_kidney_left"] for r in rows])
        secs = np.array([r["seconds"] for r in rows])
        tmin = np.mean([s["train_seconds"] for s in runs]) / 60
        train_min = f"{tmin:.1f}" if np.isfinite(tmin) else "12.7-13.1 (model card)"
        lines.append(f"| {name} | {len(rows)} | {dr.mean():.3f} ({dr.min():.3f}) | {dl.mean():.3f} ({dl.min():.3f}) | "
                     f"{train_min} | {runs[0]['iterations']} | {np.median(secs):.2f} |")
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results" / "architecture_comparison.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
