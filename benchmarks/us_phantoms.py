"""Seed 003's ultrasound ensemble on synthetic kidney ultrasound phantoms (CPU).

    python benchmarks/us_phantoms.py [--epochs 12] [--fusion-epochs 4] [--train 160] [--test 100]
                                     [--size 96 128] [--work runs/us_phantoms] [--out benchmarks/results/us_phantoms.md]

Trains the three members (DeepLabV3+ ResNet-18, DeepLabV3+ ResNet-152, LinkNet ResNet-18)
one after the other, then the fusion convolution ("staged"), on phantoms from
``kidneyseg.datasets.us_phantom`` (seed 1), picks nothing on the test set, and scores every
member and the fused model on held-out phantoms (seed 3) with seed 003's metrics: accuracy,
precision, recall, Jaccard and F1 (= Dice) per image, mean +- std, and the confusion matrix
summed over the test set (seed 003 Figure 3). Training resumes from the work folder's
checkpoint after a kill. Target (issue 7): Dice >= 0.9 for every member and the fused
model, and the fused model at least as good as its best member.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.datasets.us_phantom import make_phantoms  # noqa: E402
from kidneyseg.metrics.overlap import accuracy, confusion, dice, jaccard, precision, recall  # noqa: E402
from kidneyseg.pipelines.us_ensemble import USEnsemblePipeline, postprocess_mask  # noqa: E402
from kidneyseg.training.us import USSample, USTrainConfig, train_us_ensemble  # noqa: E402

METRICS = {"accuracy": accuracy, "precision": precision, "recall": recall, "jaccard": jaccard, "f1_dice": dice}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--fusion-epochs", type=int, default=4)
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--validation", type=int, default=40)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--size", type=int, nargs=2, default=(96, 128), help="phantom and canvas size H W")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "runs" / "us_phantoms"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "us_phantoms.md"))
    args = ap.parse_args()
    size = tuple(args.size)

    def samples(n: int, seed: int) -> list[USSample]:
        return [USSample(p.image, p.capsule, p.sector, f"phantom_{seed}_{i}") for i, p in enumerate(make_phantoms(n, seed, size))]

    train, val, test = samples(args.train, 1), samples(args.validation, 2), samples(args.test, 3)
    cfg = USTrainConfig(image_size=size, epochs=args.epochs, fusion_epochs=args.fusion_epochs, device="cpu",
                        num_threads=args.threads, seed=0)
    work = Path(args.work)
    t0 = time.perf_counter()
    model_dir = work / "model"
    if not (model_dir / "model.pt").exists():
        train_us_ensemble(cfg, train, model_dir, validation=val, progress=True)
    train_info = json.loads((model_dir / "training_summary.json").read_text())
    pipe = USEnsemblePipeline.load(model_dir, device="cpu")

    rows: dict[str, list[dict]] = {}
    cm: dict[str, np.ndarray] = {}
    seconds = []
    for s in test:
        t = time.perf_counter()
        probs = pipe.probabilities(s.image, members=True)
        seconds.append(time.perf_counter() - t)
        for name, p in probs.items():
            m, _ = postprocess_mask(p, s.sector)
            ref = s.mask.astype(bool)
            rows.setdefault(name, []).append({k: f(m, ref) for k, f in METRICS.items()})
            c = confusion(m, ref)
            cm[name] = cm.get(name, np.zeros(4, dtype=np.int64)) + np.asarray([c.tp, c.fp, c.fn, c.tn])
    order = ["fused", *cfg.members]
    lines = [
        "# Seed 003 ensemble on ultrasound phantoms",
        "",
        f"Date {dt.date.today()}, machine: {platform.processor() or platform.machine()}, CPU only, "
        f"{args.threads} torch threads. Phantoms {size[0]} x {size[1]} px: {args.train} train (seed 1), "
        f"{args.validation} validation (seed 2), {args.test} test (seed 3). Staged training: {args.epochs} epochs "
        f"per member, {args.fusion_epochs} for the fusion convolution, Adam 1e-3, batch {cfg.batch_size}, Dice + BCE. "
        f"Training seconds: {json.dumps(train_info['train_seconds'])}. Inference (all members + fusion, "
        f"one image): {np.mean(seconds):.3f} s mean.",
        "",
        "Per test image, mean +- std (%), after thresholding at 0.5 and keeping the largest component in the sector:",
        "",
        "| model | " + " | ".join(METRICS) + " |",
        "| --- |" + " --- |" * len(METRICS),
    ]
    result = {"config": cfg.to_dict(), "train": train_info, "inference_seconds_mean": float(np.mean(seconds)), "models": {}}
    for name in order:
        vals = {k: np.asarray([r[k] for r in rows[name]]) for k in METRICS}
        lines.append(f"| {name} | " + " | ".join(f"{100 * v.mean():.2f} +- {100 * v.std(ddof=1):.2f}" for v in vals.values()) + " |")
        result["models"][name] = {k: {"mean": float(v.mean()), "std": float(v.std(ddof=1)), "min": float(v.min())}
                                  for k, v in vals.items()}
        result["models"][name]["confusion_tp_fp_fn_tn"] = cm[name].tolist()
    lines += ["", "Confusion matrix summed over the test images (pixels; seed 003 Figure 3):", "",
              "| model | TP | FP | FN | TN |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | " + " | ".join(str(int(v)) for v in cm[n]) + " |" for n in order]
    best_member = max(cfg.members, key=lambda m: result["models"][m]["f1_dice"]["mean"])
    fused = result["models"]["fused"]["f1_dice"]["mean"]
    ok_all = all(result["models"][n]["f1_dice"]["mean"] >= 0.9 for n in order)
    lines += ["", f"Target Dice >= 0.90 for every model: {'met' if ok_all else 'NOT met'}. Fused {100 * fused:.2f} % vs best "
              f"member ({best_member}) {100 * result['models'][best_member]['f1_dice']['mean']:.2f} %: "
              f"{'fused at least as good' if fused >= result['models'][best_member]['f1_dice']['mean'] else 'fused WORSE'}.",
              f"Total wall time {time.perf_counter() - t0:.0f} s (this run; training is skipped when the work folder holds a model)."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
