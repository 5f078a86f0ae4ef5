"""Seed 000's ablation (its Table 1) on the real data we have: CHAOS T2 MRI (issue 5, data (c)).

    python benchmarks/em_localised.py [--epochs 30] [--folds 5] [--variants none body em em-sr em-alone]
                                      [--work runs/em_localised] [--out benchmarks/results/em_localised.md]

Rows, as in the paper, all with the same small 3D U-Net (16-32-64-128 filters, Dice loss,
input 64 x 64 x 16, or 64 x 64 x 64 after super-resolution), the same augmentation and the
same number of epochs; only the crop changes:

* ``none``  - plain 3D U-Net: the whole field of view resized to the network input;
* ``body``  - connected-component crop: the largest component of an Otsu body mask ("CC");
* ``em-alone`` - the EM kidney classes themselves as the segmentation (no network);
* ``em``    - EM localisation (12 classes, k-means start, 7 iterations, MRF 0.05, box + 5 px)
  then the 3D U-Net on the crop (the proposed method);
* ``em-sr`` - the same on input super-resolved x5 through-plane.

There is no renal DWI with masks here, so the EM runs on the T2 intensity itself ("an
intensity-based localiser in place of FA", issue 5 (c)). Histogram-matching augmentation
matches every training crop to the ukat GE gradient-echo scan (another contrast, as the
paper matched to a brain data set).

Data: ../shared/data/chaos_t2 (CHAOS, CC BY-SA 4.0), the 14 cases of the shipped MRI model's
cross-validation (case 39, the bundled example, left out), in the same 5 patient folds
(``split_folds``, seed 0). Metrics per held-out case on both kidneys as one mask (the paper's
task is one kidney class): DSC, VD = |V_pred - V_ref| / V_ref, PPV; mean +- std over cases.
Per-case results are cached in ``--work`` so a killed run resumes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.localize.em import localise  # noqa: E402
from kidneyseg.pipelines.em_unet3d import EMUNetPipeline  # noqa: E402
from kidneyseg.specs.em_unet import EMUNetConfig, prepare  # noqa: E402
from kidneyseg.training.em_unet import _prepare_case, chaos_train_cases, train_em_unet  # noqa: E402
from kidneyseg.training.trainer import split_folds  # noqa: E402

CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"
GE_REF = next((ROOT.parent / "shared" / "data" / "ukat_kidney_masks" / "ge_01").glob("*_e1.nii.gz"), None)
NAMES = {"none": "3D U-Net (whole field of view)", "body": "CC + 3D U-Net", "em-alone": "EM alone",
         "em": "EM + 3D U-Net (proposed)", "em-sr": "EM + 3D U-Net, super-resolved x5"}
PAPER = {"none": "0.49 +- 0.28 / 0.36 +- 0.20 / 0.67 +- 0.08", "body": "0.52 +- 0.21 / 0.31 +- 0.17 / 0.71 +- 0.07",
         "em-alone": "0.65 +- 0.23 / 0.16 +- 0.15 / 0.76 +- 0.07", "em": "0.88 +- 0.10 / 0.09 +- 0.05 / 0.94 +- 0.05",
         "em-sr": "0.86 +- 0.12 / 0.08 +- 0.05 / 0.93 +- 0.05"}


def scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    p, r = pred > 0, ref > 0
    tp = np.count_nonzero(p & r)
    return {"dsc": 2 * tp / max(p.sum() + r.sum(), 1), "vd": abs(int(p.sum()) - int(r.sum())) / max(r.sum(), 1),
            "ppv": tp / p.sum() if p.any() else 0.0}


def config_for(variant: str, epochs: int) -> EMUNetConfig:
    refs = (str(GE_REF),) if GE_REF else ()
    base = EMUNetConfig(epochs=epochs, histogram_references=refs, input_kind="T2", num_threads=2)
    if variant == "none":
        return replace(base, localiser="none")
    if variant == "body":
        return replace(base, localiser="body")
    if variant == "em-sr":
        return replace(base, super_resolution=5)
    return base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=["none", "body", "em-alone", "em", "em-sr"])
    ap.add_argument("--only-folds", type=int, nargs="+", default=None,
                    help="run these folds only (the others are reported only if cached)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "em_localised"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "em_localised.md"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cases = {c.case_id: c for c in chaos_train_cases(CHAOS, exclude=("39",))}
    folds = split_folds(sorted(cases), args.folds, 0)
    results: dict[str, dict[str, dict]] = {}
    train_seconds: dict[str, float] = {}
    for variant in args.variants:
        results[variant] = {}
        train_seconds[variant] = 0.0
        for k, test_ids in enumerate(folds):
            cache = work / variant / f"fold{k}.json"
            if cache.is_file():
                got = json.loads(cache.read_text())
                results[variant].update(got["cases"])
                train_seconds[variant] += got["train_seconds"]
                continue
            if args.only_folds is not None and k not in args.only_folds:
                continue
            train = [cases[c] for c in sorted(cases) if c not in test_ids]
            model_dir = work / ("em" if variant == "em-alone" else variant) / f"fold{k}"
            t0 = time.perf_counter()
            if not (model_dir / "model.pt").is_file():
                train_em_unet(train, config_for("em" if variant == "em-alone" else variant, args.epochs), model_dir,
                              device="cpu", progress=False)
            secs = time.perf_counter() - t0
            pipe = EMUNetPipeline.load(model_dir, "cpu")
            got = {}
            for cid in test_ids:
                case = cases[cid]
                _, ref = _prepare_case(case)
                if variant == "em-alone":
                    prep = prepare(case.image)
                    t1 = time.perf_counter()
                    _, vicinity = localise(prep.loc, prep.spacing_mm, pipe.config.em)
                    got[cid] = {**scores(vicinity, ref), "seconds": time.perf_counter() - t1}
                else:
                    res = pipe.segment(case.image)
                    _, pred = _prepare_case(replace(case, kidneys=res.mask.array > 0))
                    got[cid] = {**scores(pred, ref), "seconds": res.seconds}
                print(variant, k, cid, {m: round(v, 3) for m, v in got[cid].items()}, flush=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"cases": got, "train_seconds": secs}, indent=2))
            results[variant].update(got)
            train_seconds[variant] += secs
    write_report(results, train_seconds, folds, args)


def write_report(results: dict, train_seconds: dict, folds: list, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Seed 000's ablation on CHAOS T2 (benchmarks/em_localised.py)", "",
        f"Run {dt.date.today().isoformat()} on {platform.processor() or platform.machine()}, CPU only "
        f"(2 cores), torch threads 2, while other jobs shared the machine (times are upper bounds). "
        f"{args.folds}-fold cross-validation by patient over 14 CHAOS T2 cases "
        f"(the shipped MRI model's folds), {args.epochs} epochs per model; the EM localiser runs on the T2 "
        "intensity (no diffusion data with masks exists here). Both kidneys are one class, as in the paper.", "",
        "| method | cases | DSC | VD | PPV | s / case (inference) | training s (all folds) | paper (mouse DTI, MD): DSC / VD / PPV |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for variant, per_case in results.items():
        vals = {m: np.array([c[m] for c in per_case.values()]) for m in ("dsc", "vd", "ppv", "seconds")}
        summary[variant] = {m: [float(v.mean()), float(v.std())] for m, v in vals.items()}
        lines.append(f"| {NAMES[variant]} | {len(per_case)} | {vals['dsc'].mean():.3f} +- {vals['dsc'].std():.3f} | "
                     f"{vals['vd'].mean():.3f} +- {vals['vd'].std():.3f} | {vals['ppv'].mean():.3f} +- "
                     f"{vals['ppv'].std():.3f} | {vals['seconds'].mean():.1f} | {train_seconds[variant]:.0f} | "
                     f"{PAPER[variant]} |")
    common = sorted(set.intersection(*(set(r) for r in results.values())), key=int) if results else []
    if any(len(r) != len(common) for r in results.values()):
        lines += ["", f"The same rows on the {len(common)} cases every row has (cases {', '.join(common)}); "
                  "not every fold was run for every row (CPU time):", "",
                  "| method | cases | DSC | VD | PPV |", "|---|---|---|---|---|"]
        for variant, per_case in results.items():
            vals = {m: np.array([per_case[c][m] for c in common]) for m in ("dsc", "vd", "ppv")}
            lines.append(f"| {NAMES[variant]} | {len(common)} | " + " | ".join(
                f"{vals[m].mean():.3f} +- {vals[m].std():.3f}" for m in ("dsc", "vd", "ppv")) + " |")
    lines += ["", "Per case DSC:", "", "| case | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    ids = sorted({c for r in results.values() for c in r}, key=int)
    for cid in ids:
        lines.append(f"| {cid} | " + " | ".join(f"{results[v][cid]['dsc']:.3f}" if cid in results[v] else "-"
                                                 for v in results) + " |")
    fig, ax = plt.subplots(figsize=(1.6 * len(results) + 2, 4))
    data = [[c["dsc"] for c in results[v].values()] for v in results]
    ax.violinplot(data, showmeans=True)
    ax.set_xticks(range(1, len(results) + 1), [NAMES[v].replace(" + ", "+\n") for v in results], fontsize=8)
    ax.set_ylabel("DSC per held-out case")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=100)
    lines += ["", f"![DSC per case]({png.name})", ""]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "cases": results, "folds": folds,
                                                    "epochs": args.epochs}, indent=2), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
