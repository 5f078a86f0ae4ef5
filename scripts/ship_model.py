"""Copy a trained model folder into the package and write its model card.

Usage: python scripts/ship_model.py --final runs/final --folds runs/fold0 runs/fold1 ... \
           [--dest src/kidneyseg/assets/models/mr_t2_kidney] [--cv-rows ROWS.jsonl]

A seed ensemble (``--final`` made by ``kidneyseg ensemble``, with ``ensemble.json``) ships
all its weight files; its training times are read from the members' source folders, and its
cross-validation table from ``--cv-rows`` (``benchmarks/mr_inference_settings.py`` rows of
the ensemble's fold folders, one pass and the argmax), since no trainer validated it.

The card holds: training data, the config, cross-validation Dice per kidney (pooled over the
folds' held-out cases, full pipeline with post-processing), total-kidney-volume error,
training time, date and the sha256 of model.pt. An ``inference.json`` in the final folder
(written by ``benchmarks/mr_inference_settings.py --write``) is shipped with it and described;
without one, a stale copy in the destination is removed, so settings never outlive their model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
from pathlib import Path

import torch

from kidneyseg.inference.settings import INFERENCE, read_inference_config
from kidneyseg.models.store import ENSEMBLE, read_ensemble, sha256
from kidneyseg.training.trainer import summarise_cv, summarise_cv_rows


def _members(folder: Path) -> list[dict]:
    """A model folder's weight files (``read_ensemble``), each with the training folder it came from."""
    return [dict(m, source=m.get("source", str(folder))) for m in read_ensemble(folder)]


def _train_seconds(folder: Path) -> list[float]:
    return [json.loads((Path(m["source"]) / "training_summary.json").read_text())["train_seconds"] for m in _members(folder)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--final", required=True, type=Path)
    ap.add_argument("--folds", nargs="+", required=True, type=Path)
    ap.add_argument("--dest", type=Path, default=Path("src/kidneyseg/assets/models/mr_t2_kidney"))
    ap.add_argument("--cv-rows", type=Path, default=None,
                    help="mr_inference_settings.py rows to take the CV table from (setting: one pass, argmax)")
    args = ap.parse_args()

    dest = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    members = _members(args.final)
    for old in list(dest.glob("model*.pt")) + list(dest.glob("training_*")) + [dest / ENSEMBLE]:
        old.unlink(missing_ok=True)  # nothing of an earlier model outlives it
    shutil.copy2(args.final / "config.json", dest / "config.json")
    for i, m in enumerate(members):
        shutil.copy2(args.final / m["weights"], dest / m["weights"])
        suffix = "" if i == 0 else f"_{i}"
        for name in ("training_log.csv", "training_summary.json"):
            shutil.copy2(Path(m["source"]) / name, dest / name.replace(".", f"{suffix}.", 1))
    if len(members) > 1:
        shipped = [dict(m, source=f"training member {i}") for i, m in enumerate(members)]  # no local paths
        (dest / ENSEMBLE).write_text(json.dumps({"combine": "mean_softmax", "members": shipped}, indent=2) + "\n")
    shipped_cfg = json.loads((dest / "config.json").read_text())
    shared = (Path(__file__).resolve().parents[1].parent / "shared").resolve()
    data = Path(shipped_cfg["dataset"]).resolve()
    if Path(shipped_cfg["dataset"]).is_absolute() and data.is_relative_to(shared):
        # name the data as the repository sees it, not by this machine's absolute path
        shipped_cfg["dataset"] = str(Path("../shared") / data.relative_to(shared))
        (dest / "config.json").write_text(json.dumps(shipped_cfg, indent=2) + "\n")
    if (args.final / INFERENCE).is_file():
        shutil.copy2(args.final / INFERENCE, dest / INFERENCE)
    else:
        (dest / INFERENCE).unlink(missing_ok=True)
    inference_text = "one plain network pass per slice, argmax (no `inference.json`)."
    if (dest / INFERENCE).is_file():
        inf = read_inference_config(dest)  # validated as the loader will read it
        shifts = ", ".join(f"({a}, {b})" for a, b in inf.tta_shifts_px)
        thr = "argmax" if inf.kidney_threshold is None else f"kidney if its probability is >= {inf.kidney_threshold}"
        inference_text = (f"`inference.json`: softmax averaged over in-plane shifts of {shifts} pixels"
                          f"{' and their left-right mirrors' if inf.tta_mirror_x else ''}; {thr}. Chosen by "
                          f"{inf.chosen_by}. `kidneyseg segment --no-tta` keeps the threshold with one pass.")
    if args.cv_rows is not None:
        rows = [json.loads(line) for line in args.cv_rows.read_text().splitlines() if line.strip()]
        cv = summarise_cv_rows([r for r in rows if (r["tta"], r["threshold"]) == ("none", None)], dest / "cv_summary.json")
        cv_source = (f"The cross-validation table below is from `{args.cv_rows.name}` (benchmarks/mr_inference_settings.py "
                     "on the ensemble's fold folders): one pass per member, argmax.")
    else:
        cv = summarise_cv(args.folds, dest / "cv_summary.json")
        cv_source = "The cross-validation table below is the trainer's own validation: one pass, argmax."
    fold_secs = [t for f in args.folds for t in _train_seconds(f)]
    final_secs = _train_seconds(args.final)
    final = json.loads((Path(members[0]["source"]) / "training_summary.json").read_text())
    config = json.loads((args.final / "config.json").read_text())
    seeds = [m.get("seed", config["seed"]) for m in members]
    files = []
    for m in members:
        w = dest / m["weights"]
        n_params = sum(v.numel() for v in torch.load(w, weights_only=True).values())
        files.append(f"`{m['weights']}`, {w.stat().st_size / 1e6:.1f} MB, {n_params:,} parameters, sha256 `{sha256(w)}`")
    if len(members) > 1:
        file_text = (f"an ensemble of {len(members)} networks of one config trained with seeds "
                     f"{', '.join(map(str, seeds))} (`ensemble.json`: their softmax is averaged): " + "; ".join(files))
        time_text = (f"final models {', '.join(f'{t / 60:.1f}' for t in final_secs)} min (one per seed)")
    else:
        file_text, time_text = files[0], f"final model {final_secs[0] / 60:.1f} min"
    rows = "\n".join(
        f"| {r['fold']} | {r['case']} | {r['dice_kidney_right']:.3f} | {r['dice_kidney_left']:.3f} | "
        f"{r['kidney_right_ml']:.1f} / {r['kidney_right_ref_ml']:.1f} | {r['kidney_left_ml']:.1f} / {r['kidney_left_ref_ml']:.1f} |"
        for r in cv["cases"])
    dr, dl = cv["dice_kidney_right"], cv["dice_kidney_left"]
    aug_extra = (" plus a random histogram shift and a bias field (`augment_intensity` \"strong\")"
                 if config.get("augment_intensity") == "strong" else "")
    norm_text = "intensities clipped to the 0.5/99.5 percentiles and z-scored per volume."
    if config.get("normalisation") == "body_clip_zscore":
        norm_text = (f"intensities first clipped at {config['body_clip_ratio']} x the body median (the 99.5th percentile "
                     "of the training kidneys' intensity / body median), then clipped to the 0.5/99.5 percentiles "
                     "and z-scored per volume (`normalisation` \"body_clip_zscore\").")
    card = f"""# Model card: `mr_t2_kidney` (pipeline `mr-t2-unet`)

Left and right kidney segmentation on T2-weighted (SPIR) axial abdominal MRI.

- **Date**: {dt.date.today().isoformat()}
- **File**: {file_text}
- **Labels written**: 1 `kidney_right`, 2 `kidney_left` (patient's sides). The network predicts one
  "kidney" class; sides are named from world (RAS+) coordinates after connected components
  (`kidneyseg.postprocess.assign_kidneys`).
- **Architecture**: MONAI `UNet` 2D, channels {tuple(config['channels'])}, {config['num_res_units']} residual unit(s),
  instance norm; input = the slice and {config['context_slices']} neighbour(s) on each side (2.5D); in-plane
  resampling to {config['target_spacing_mm']} mm; {norm_text}
- **Training**: {config['iterations']} iterations of AdamW (lr {config['learning_rate']}, poly decay), batch
  {config['batch_size']} patches of {config['patch_size'][0]} x {config['patch_size'][1]}, Dice + cross-entropy
  (MONAI `DiceCELoss`), foreground oversampling {config['foreground_fraction']}, rotation/zoom/noise/intensity/gamma
  augmentation (MONAI){aug_extra}, seed {', '.join(map(str, seeds))}. Full config: `config.json`.
- **Training data**: CHAOS challenge MR T2-SPIR, cases {', '.join(final['train_cases'])} from
  `../shared/data/chaos_t2` (expert labels; CC BY-SA 4.0, Kavur et al., Medical Image Analysis 69, 2021,
  Zenodo 3431873). Case 39 was never used for training: it is the bundled example.
- **Training time**: {time_text} on {platform.processor() or platform.machine()}
  CPU, torch {torch.__version__}, 1 intra-op thread (two trainings shared the machine's 2 cores); folds
  {min(fold_secs) / 60:.1f} to {max(fold_secs) / 60:.1f} min each.
- **Inference**: {inference_text} {cv_source}

## Cross-validation ({len(args.folds)}-fold, split by patient, {cv['n_cases']} cases)

Each fold's model segmented its held-out cases with the full pipeline (post-processing included);
Dice is computed on the original grid against the expert mask.

| kidney | mean Dice | std | median | min |
| --- | --- | --- | --- | --- |
| right | {dr['mean']:.3f} | {dr['std']:.3f} | {dr['median']:.3f} | {dr['min']:.3f} |
| left | {dl['mean']:.3f} | {dl['std']:.3f} | {dl['median']:.3f} | {dl['min']:.3f} |

Total kidney volume error against the expert: mean absolute {cv['total_volume_error_pct']['mean_abs']:.1f} %,
mean signed {cv['total_volume_error_pct']['mean_signed']:+.1f} %, worst {cv['total_volume_error_pct']['max_abs']:.1f} %.

| fold | case | Dice right | Dice left | right mL (pred / expert) | left mL (pred / expert) |
| --- | --- | --- | --- | --- | --- |
{rows}

## Intended use and limits
Research volumetry of native kidneys on T2-weighted axial abdominal MRI similar to the
CHAOS T2-SPIR scans (the training copies are resampled to 1.25 x 1.25 x 7.7 mm). It fails on gradient-echo scans
(Dice 0 on the three ukat scans, `benchmarks/results/ukat_generalisation.md`); not validated on other
MR contrasts, coronal acquisitions, transplanted or severely diseased kidneys, children, or CT. Sides are only
correct when the image's affine is correct. 15 training subjects is a small sample: check the
overlay of every case.
"""
    (dest / "model_card.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
