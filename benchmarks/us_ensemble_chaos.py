"""Seed 003's 2D ensemble on real images: axial slices of CHAOS T2 MRI, side by side with the
2.5D U-Net of pipeline ``mr-t2-unet`` (issue 7, proof (c)).

    python benchmarks/us_ensemble_chaos.py [--fold 0] [--epochs 8] [--fusion-epochs 3] [--size 128 128]
                                           [--work runs/us_chaos] [--out benchmarks/results/us_ensemble_chaos.md]

Data: ../shared/data/chaos_t2 (CHAOS, CC BY-SA 4.0), the 14 cases the shipped MRI model's
cross-validation used (case 39, the bundled example, is left out), split into the same 5
patient folds (``kidneyseg.training.trainer.split_folds``, seed 0). One fold is run here: the
ensemble is trained on the other folds' slices and scored on the held-out cases, against the
2.5D U-Net's scores for the same cases from its model card (same fold, same cases).

Each volume is put in RAS (``kidneyseg.io.to_canonical``), scaled to [0, 1] by its 99.5th
percentile, and cut into axial slices (the networks are 2D and take grey images in [0, 1], as
for ultrasound). Training slices: every slice with a kidney plus every third slice without.
Both kidneys are one class ("kidney"); at test time the slices are stacked back into a
volume and the sides are named in world coordinates by ``kidneyseg.postprocess.assign_kidneys``,
the same post-processing as ``mr-t2-unet``. Dice per side against the expert masks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.datasets import chaos_cases  # noqa: E402
from kidneyseg.io import read_image, to_canonical  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.metrics.overlap import dice  # noqa: E402
from kidneyseg.pipelines.us_ensemble import USEnsemblePipeline  # noqa: E402
from kidneyseg.postprocess import assign_kidneys  # noqa: E402
from kidneyseg.training.trainer import split_folds  # noqa: E402
from kidneyseg.training.us import USSample, USTrainConfig, train_us_ensemble  # noqa: E402

CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"
CARD = ROOT / "src" / "kidneyseg" / "assets" / "models" / "mr_t2_kidney" / "model_card.md"


def load_case(case):
    img, _ = to_canonical(read_image(case.image, dtype=np.float32))
    lab, _ = to_canonical(read_image(case.label))
    scale = float(np.percentile(img.array, 99.5)) or 1.0
    x = np.clip(img.array / scale, 0, 1).astype(np.float32)
    return x, case.kidneyseg_labels(lab.array), img.affine


def card_scores() -> dict[str, tuple[float, float]]:
    """Per-case CV Dice (right, left) of the shipped model, from its model card."""
    out = {}
    for line in CARD.read_text().splitlines():
        m = re.match(r"\| fold\d+ \| (\w+) \| ([\d.]+) \| ([\d.]+) \|", line)
        if m:
            out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--fusion-epochs", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=(128, 128))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "runs" / "us_chaos"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "us_ensemble_chaos.md"))
    args = ap.parse_args()
    cfg_model = json.loads((CARD.parent / "config.json").read_text())
    cases = [c for c in chaos_cases(CHAOS, MR_KIDNEYS) if c.case_id not in cfg_model["exclude_cases"]]
    folds = split_folds([c.case_id for c in cases], cfg_model["folds"], cfg_model["seed"])
    test_ids = set(folds[args.fold])
    card = card_scores()
    assert test_ids <= set(card), f"fold {args.fold} cases {sorted(test_ids)} not in the model card"

    t0 = time.perf_counter()
    train: list[USSample] = []
    for c in cases:
        if c.case_id in test_ids:
            continue
        x, y, _ = load_case(c)
        for k in range(x.shape[2]):
            has = bool(y[:, :, k].any())
            if has or k % 3 == 0:
                train.append(USSample(x[:, :, k], y[:, :, k] > 0, None, f"{c.case_id}_{k}"))
    load_s = time.perf_counter() - t0
    cfg = USTrainConfig(image_size=tuple(args.size), epochs=args.epochs, fusion_epochs=args.fusion_epochs, device="cpu",
                        num_threads=args.threads, seed=0)
    model_dir = Path(args.work) / f"fold{args.fold}"
    if not (model_dir / "model.pt").exists():
        train_us_ensemble(cfg, train, model_dir, progress=True)
    info = json.loads((model_dir / "training_summary.json").read_text())
    pipe = USEnsemblePipeline.load(model_dir, device="cpu")

    rows = []
    for c in sorted((c for c in cases if c.case_id in test_ids), key=lambda c: int(c.case_id)):
        x, y, affine = load_case(c)
        t = time.perf_counter()
        scores = {}
        for name in ("fused", *cfg.members):
            prob = np.stack([pipe.probabilities(x[:, :, k], members=name != "fused")[name] for k in range(x.shape[2])], axis=2)
            kid = assign_kidneys((prob >= 0.5).astype(np.uint8), affine, MR_KIDNEYS)
            scores[name] = (dice(kid.labels == 1, y == 1), dice(kid.labels == 2, y == 2))
        seconds = time.perf_counter() - t
        rows.append({"case": c.case_id, "slices": int(x.shape[2]), "seconds_all_models": round(seconds, 1),
                     **{f"{n}_{side}": round(v[i], 3) for n, v in scores.items() for i, side in enumerate(("right", "left"))},
                     "mr_t2_unet_right": card[c.case_id][0], "mr_t2_unet_left": card[c.case_id][1]})
    cols = ["fused", *cfg.members, "mr_t2_unet"]
    lines = ["# Seed 003 ensemble on CHAOS T2 axial slices vs the 2.5D U-Net", "",
             f"Date {dt.date.today()}, CPU only, {args.threads} threads. Fold {args.fold} of the shipped model's 5-fold "
             f"patient split: trained on {len(cases) - len(test_ids)} cases ({len(train)} slices, {load_s:.0f} s to load), "
             f"tested on cases {', '.join(sorted(test_ids, key=int))}. Canvas {args.size[0]} x {args.size[1]} "
             f"(letterboxed from the scan's in-plane grid), {args.epochs} epochs per member, {args.fusion_epochs} for "
             f"the fusion, Adam 1e-3, random encoder weights. Training seconds: {json.dumps(info['train_seconds'])}.",
             "", "Dice per kidney (right / left); `mr_t2_unet` is the shipped model's cross-validation score for the "
             "same case and fold (model card).", "",
             "| case | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for r in rows:
        lines.append(f"| {r['case']} | " + " | ".join(f"{r[f'{c}_right']:.3f} / {r[f'{c}_left']:.3f}" for c in cols) + " |")
    lines.append("| mean | " + " | ".join(
        f"{np.mean([r[f'{c}_right'] for r in rows]):.3f} / {np.mean([r[f'{c}_left'] for r in rows]):.3f}" for c in cols) + " |")
    lines += ["", f"Inference, all members and the fusion, slice by slice: {np.mean([r['seconds_all_models'] for r in rows]):.1f} s "
              "per volume (mean)."]
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"config": cfg.to_dict(), "train": info, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
