"""Choose the MR model's inference settings (test-time augmentation, kidney threshold) by
cross-validation, and measure what the choice is worth without peeking.

    python benchmarks/mr_inference_settings.py --folds runs/bc/cv/fold_{0..4} \
        [--mirror] [--write src/kidneyseg/assets/models/mr_t2_kidney]

For every fold model and each of its held-out cases, the softmax probabilities are computed
once per test-time augmentation (TTA) candidate; every decision threshold is then applied and
the full ``mr-t2-unet`` post-processing run (:meth:`MRKidneyPipeline.finish`), and the Dice per
kidney is scored against the expert mask on the input grid.

Two results:
  * **nested** (the honest estimate): for each outer fold, the setting with the best mean Dice
    (both kidneys) on the other folds' held-out cases is chosen and applied to this fold's;
  * **chosen**: the setting that is best on all held-out cases; ``--write`` stores it as the
    model folder's ``inference.json``.
Ties (within 0.001 mean Dice) go to fewer network passes, then to the argmax.

Writes benchmarks/results/mr_inference_settings.md and .jsonl. Needs ../shared/data/chaos_t2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.inference import (InferenceConfig, TestTimeAugmentation, decide_labels,  # noqa: E402
                                 predict_probabilities, prepare, write_inference_config)
from kidneyseg.metrics import dice  # noqa: E402
from kidneyseg.models.store import load_model  # noqa: E402
from kidneyseg.pipelines.mr_t2 import CORE_DEPTH_MM, MRKidneyPipeline  # noqa: E402
from kidneyseg.training.data import read_case  # noqa: E402
from kidneyseg.training.trainer import select_cases  # noqa: E402

CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"
CROSS4 = ((0, 0), (4, 0), (-4, 0), (0, 4), (0, -4))
GRID8 = ((0, 0), (8, 0), (0, 8), (8, 8))
TTA = {"none": TestTimeAugmentation(), "shift4": TestTimeAugmentation(CROSS4), "shift8": TestTimeAugmentation(GRID8)}
TTA_MIRROR = {"mirror": TestTimeAugmentation(((0, 0),), True), "shift4+mirror": TestTimeAugmentation(CROSS4, True)}
THRESHOLDS = (None, 0.5, 0.45, 0.4, 0.35, 0.3)


def score_folds(folds: list[Path], tta: dict[str, TestTimeAugmentation], dataset: Path,
                core_depth_mm: float | None = CORE_DEPTH_MM) -> list[dict]:
    """One row per (held-out case, TTA, threshold): Dice right / left after post-processing."""
    rows = []
    for fold in folds:
        bundle = load_model(fold, "cpu")
        cfg = bundle.config.replace(dataset=str(dataset))
        pipe = MRKidneyPipeline(bundle, core_depth_mm=core_depth_mm)
        _, val = select_cases(cfg)
        for case in val:
            image, ref = read_case(case)
            ref = np.asarray(ref.array).astype(np.int64)
            refs = {v: np.isin(ref, [s for s, d in case.label_values.items() if d == v]) for v in cfg.label_map}
            prep = prepare(image, cfg.target_spacing_mm, cfg.clip_ratio, cfg.normalisation)
            for name, t in tta.items():
                t0 = time.perf_counter()
                probs = predict_probabilities(bundle.network, prep, cfg.context_slices, bundle.device,
                                              levels=len(cfg.channels), tta=t)[None]
                secs = time.perf_counter() - t0
                for thr in THRESHOLDS:
                    labels = decide_labels(probs, cfg.kidney_classes, thr)[0].to(torch.uint8).numpy()
                    res = pipe.finish(image, labels, prep)
                    row = {"fold": fold.name, "case": case.case_id, "tta": name, "passes": t.passes,
                           "threshold": thr, "network_seconds": round(secs, 2), "threads": torch.get_num_threads()}
                    for v, n in cfg.label_map.items():
                        row[f"dice_{n}"] = round(dice(res.mask.array == v, refs[v]), 4)
                        row[f"{n}_ml"] = round(res.volumes_ml[f"{n}_ml"], 2)
                        row[f"{n}_ref_ml"] = round(float(refs[v].sum()) * image.voxel_volume_ml, 2)
                    rows.append(row)
            print(f"{fold.name} case {case.case_id} done", flush=True)
    return rows


def _key(r: dict) -> tuple:
    return r["tta"], r["threshold"]


def summarise(rows: list[dict]) -> dict[tuple, dict]:
    """Mean Dice per setting over the given rows."""
    out: dict[tuple, dict] = {}
    for r in rows:
        s = out.setdefault(_key(r), {"passes": r["passes"], "right": [], "left": []})
        s["right"].append(r["dice_kidney_right"])
        s["left"].append(r["dice_kidney_left"])
        if "kidney_right_ml" in r:  # total kidney volume error, %
            ref = r["kidney_right_ref_ml"] + r["kidney_left_ref_ml"]
            s.setdefault("tkv_error", []).append(100 * abs(r["kidney_right_ml"] + r["kidney_left_ml"] - ref) / ref)
    for s in out.values():
        s["mean_right"], s["mean_left"] = float(np.mean(s["right"])), float(np.mean(s["left"]))
        s["mean"] = (s["mean_right"] + s["mean_left"]) / 2
    return out


def best(rows: list[dict]) -> tuple:
    """The setting with the highest mean Dice; within 0.001 of it, fewer passes, then argmax."""
    summ = summarise(rows)
    top = max(s["mean"] for s in summ.values())
    near = [k for k, s in summ.items() if s["mean"] >= top - 0.001]
    return min(near, key=lambda k: (summ[k]["passes"], k[1] is not None, -(k[1] or 0), -summ[k]["mean"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", nargs="+", type=Path, required=True)
    ap.add_argument("--rows", type=Path, default=None,
                    help="re-summarise the .jsonl rows of an earlier run of these folds instead of scoring again")
    ap.add_argument("--mirror", action="store_true", help="also try mirrored passes (models trained with flips)")
    ap.add_argument("--write", type=Path, default=None, help="model folder to write the chosen inference.json into")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--core-depth-mm", type=lambda v: None if v == "none" else float(v), default=CORE_DEPTH_MM,
                    help=f"rank kidney components by their core at this depth (assign_kidneys; default "
                         f"{CORE_DEPTH_MM}, the pipeline's), or 'none' for by voxel count (before 2026-12-02)")
    ap.add_argument("--dataset", type=Path, default=CHAOS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mr_inference_settings.md")
    args = ap.parse_args()
    if not args.dataset.is_dir():
        sys.exit(f"benchmark needs {args.dataset}")
    torch.set_num_threads(args.threads)
    tta = dict(TTA, **(TTA_MIRROR if args.mirror else {}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.rows is not None:
        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
        if sorted({r["fold"] for r in rows}) != sorted(f.name for f in args.folds):
            sys.exit(f"{args.rows}: rows are of folds {sorted({r['fold'] for r in rows})}, not of --folds")
    else:
        rows = score_folds(args.folds, tta, args.dataset, args.core_depth_mm)
    if args.rows is None or args.rows.resolve() != args.out.with_suffix(".jsonl").resolve():
        args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    summ = summarise(rows)
    nested, picks = [], {}
    for f in sorted({r["fold"] for r in rows}):
        k = best([r for r in rows if r["fold"] != f])
        picks[f] = k
        nested += [r for r in rows if r["fold"] == f and _key(r) == k]
    n_right = float(np.mean([r["dice_kidney_right"] for r in nested]))
    n_left = float(np.mean([r["dice_kidney_left"] for r in nested]))
    chosen = best(rows)
    label = lambda k: f"{k[0]}, {'argmax' if k[1] is None else f'p >= {k[1]}'}"  # noqa: E731
    plain = summ[("none", None)]
    secs = {}
    for r in rows:
        secs.setdefault(r["tta"], []).append(r["network_seconds"])
    lines = [f"# MR inference settings by cross-validation ({dt.date.today().isoformat()})", "",
             f"Fold models: {', '.join(str(f) for f in args.folds)}; {len(plain['right'])} held-out cases; "
             f"{os.cpu_count()} cores, {rows[0].get('threads', '1')} thread(s) for the network seconds, CPU only. Dice after the full post-processing, "
             "on the input grid.", "",
             "| TTA | passes | network s / case (median) | threshold | Dice right | Dice left | mean | total volume error, mean abs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, s in summ.items():
        tkv = f"{np.mean(s['tkv_error']):.1f} %" if "tkv_error" in s else "not recorded"
        lines.append(f"| {k[0]} | {s['passes']} | {np.median(secs[k[0]]):.1f} | {'argmax' if k[1] is None else k[1]} | "
                     f"{s['mean_right']:.4f} | {s['mean_left']:.4f} | {s['mean']:.4f} | {tkv} |")
    lines += ["", "## Nested estimate (setting chosen on the other folds)", "",
              "| outer fold | setting chosen on the other folds |", "| --- | --- |"]
    lines += [f"| {f} | {label(k)} |" for f, k in picks.items()]
    lines += ["", f"Nested CV Dice: right {n_right:.4f}, left {n_left:.4f} "
              f"(one plain pass and the argmax: right {plain['mean_right']:.4f}, left {plain['mean_left']:.4f}).", "",
              f"Chosen on all held-out cases: **{label(chosen)}** (right {summ[chosen]['mean_right']:.4f}, "
              f"left {summ[chosen]['mean_left']:.4f}; optimistic, since chosen on the same cases).", ""]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text + "\n")
    if args.write is not None:
        t = tta[chosen[0]]
        settings = InferenceConfig(t.shifts_px, t.mirror_x, chosen[1],
                                   chosen_by=f"benchmarks/mr_inference_settings.py ({dt.date.today().isoformat()}): best "
                                             f"mean Dice over the {len(plain['right'])} held-out cases of the model's "
                                             f"{len(args.folds)} cross-validation folds; nested CV Dice right {n_right:.3f}, "
                                             f"left {n_left:.3f} (one pass and argmax: {plain['mean_right']:.3f} / "
                                             f"{plain['mean_left']:.3f})")
        print("wrote", write_inference_config(settings, args.write))


if __name__ == "__main__":
    main()
