"""Ship a ``recipe="multiplane"`` model as ``mr_multiprotocol_kidney`` with its model card.

Usage: python scripts/ship_multiprotocol.py --final RUN_DIR [RUN_DIR ...] --rows benchmarks/results/mr_generalisation.jsonl \
           --final-name NAME --lodo-name NAME [--proxy-name NAME] [--cv-names NAME ...] [--cv-final-names NAME ...] \
           [--cv-scoring TEXT] [--qc-settings QC.json] [--inference-settings SETTINGS.json] [--dest src/kidneyseg/assets/models/mr_multiprotocol_kidney]

``--final`` is the training run folder of the model to ship; with two or more (seeds of one
recipe) the shipped folder is their softmax ensemble (:func:`kidneyseg.training.ensemble.make_ensemble`),
each member's training log kept beside its weights. ``--final-name`` / ``--proxy-name`` / ``--lodo-name`` are the ``model`` names of
``benchmarks/mr_generalisation.py`` rows: the final model (all data), the same recipe without the
Siemens scans (scored on them: a held-out scanner), and the recipe without any ukat scan
(leave-one-domain-out). ``--cv-names`` are the row names of this recipe's CHAOS
cross-validation folds (each scored on its held-out cases); ``--cv-final-names`` those of the
shipped model itself (same training length and seeds, as the same ensemble), which may be fewer
than five folds: the card says how many. ``--qc-settings`` is the JSON that
``benchmarks/mr_qc_thresholds.py`` prints (``low_confidence_threshold``, ``validated_volume_ml``);
without it the range is taken from the whole-volume rows and the threshold is 1.0.
``--qc-settings-no-tta`` is the same JSON derived on rows made with one plain pass at the shipped
kidney threshold (what ``kidneyseg segment --fast`` runs); it becomes ``low_confidence_threshold_no_tta``.
``--qc-three-planes`` is a JSON with ``low_confidence_threshold_three_planes``, ``_no_tta`` and ``chosen_on``
(``benchmarks/mr_qc_three_planes.py`` and its rule): the thresholds for predictions that average three
planes; the card applies them to the CHAOS rows (axial abdomens of 239-354 mm, three planes under
``"planes": "coverage"``). A name in ``--cv-names`` / ``--cv-final-names`` may be ``NAME=TAG_PREFIX`` to
quote only rows whose tag starts with TAG_PREFIX.
``--inference-settings`` holds the chosen ``tta_shifts_px``, ``kidney_threshold`` and ``chosen_by``
(``benchmarks/mr_multiprotocol_settings.py``); the rows named above must have been scored with
them. The card quotes only those rows, with the QC flags as the shipped settings raise them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import torch

from kidneyseg.io.orientation import PLANES_COVERAGE_MM
from kidneyseg.inference.settings import InferenceConfig, write_inference_config
from kidneyseg.models.store import ENSEMBLE, read_ensemble, sha256
from kidneyseg.postprocess.quality import outside_range
from kidneyseg.report.html import QC_FLAGS
from kidneyseg.training.ensemble import make_ensemble


def _average(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _mean(rows: list[dict], key: str) -> str:
    value = _average(rows, key)
    return "-" if value is None else f"{value:.3f}"


def _threshold_for(r: dict, threshold: float | tuple[float, float | None]) -> float:
    """The ``low_confidence`` threshold for row ``r``: ``threshold`` is one value, or ``(one plane,
    three planes)``; a CHAOS row (an axial abdomen, three planes under ``"coverage"``) takes the
    second when it is set."""
    if not isinstance(threshold, tuple):
        return threshold
    one, three = threshold
    return three if three is not None and r.get("domain") == "chaos" else one


def _flags(r: dict, threshold: float | tuple, validated: tuple[float, float]) -> tuple[str, str]:
    """``low_confidence`` and ``volume_outside_validated_range`` as the shipped settings raise
    them (the rows were scored with whatever settings their model folder had)."""
    low = "-" if r.get("uncertain_fraction") is None else str(r["uncertain_fraction"] > _threshold_for(r, threshold))
    sides = ["kidney_right", "kidney_left"]
    scan = {f"{s}_ml": r.get(f"scan_{s}_ml", r.get(f"{s}_ml") if r.get("scope") == "volume" else None) for s in sides}
    vol = "-" if None in scan.values() else str(outside_range(scan, sides, validated))
    return low, vol


def _peer_table(path: Path, model: str = "mr-multiprotocol-unet") -> list[str]:
    """Latest row per case of ``model`` (no tag) in ``peer_examples.jsonl``, as a Markdown table."""
    latest: dict[str, dict] = {}
    for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip()):
        if r["model"] == model and not r.get("tag"):
            latest[r["case"]] = r
    if not latest:
        raise SystemExit(f"{path}: no untagged rows of {model}")
    lines = ["Real scans two peer tools ship in their PyPI packages, scored against those tools' own results "
             "(not expert masks): Renal Segmentor 2.0.0's two test subjects (GPL-3.0) against the total kidney volume "
             "its tests expect; TotalSegmentator 2.18.0's MR example (Apache-2.0) against its `total_mr` output. "
             f"Measured {max(r['date'] for r in latest.values())}.", "",
             "| scan | protocol | Dice right / left vs peer | TKV mL (peer's) | QC flags |", "| --- | --- | --- | --- | --- |"]
    for r in latest.values():
        flags = [k for k in QC_FLAGS if r.get(k)]
        d = f"{r['dice_kidney_right']:.3f} / {r['dice_kidney_left']:.3f}" if "dice_kidney_right" in r else "- (TKV only)"
        lines.append(f"| {r['case']} ({r['source']}) | {r['protocol']} | {d} | {r['tkv_ml']:.1f} ({r['peer_tkv_ml']:.1f}; "
                     f"{r['tkv_difference_pct']:+.1f} %) | {', '.join(flags) or 'none'} |")
    return lines


def _table(rows: list[dict], threshold: float | tuple, validated: tuple[float, float], confidence: bool = True) -> list[str]:
    """Markdown rows; ``confidence=False`` leaves ``low_confidence`` out (rows of a model whose
    ``uncertain_fraction`` is not on the shipped threshold's scale, e.g. one seed of an ensemble)."""
    out = ["| scan | scope | Dice right | Dice left | volume right / left, pred / ref (mL) | uncertain_fraction | low_confidence | volume_outside_validated_range |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        vol = (f"{r['kidney_right_ml']:.0f} / {r['kidney_right_ref_ml']:.0f}, {r['kidney_left_ml']:.0f} / {r['kidney_left_ref_ml']:.0f}"
               if "kidney_right_ml" in r else "-")
        low, out_of_range = _flags(r, threshold, validated)
        low = low if confidence else "-"
        out.append(f"| {r['domain']} {r['case']} | {r['scope']} | {r.get('dice_kidney_right', '-')} | {r.get('dice_kidney_left', '-')} | "
                   f"{vol} | {r.get('uncertain_fraction', '-')} | {low} | {out_of_range} |")
    return out


def _against_t2(rows: list[dict], t2: dict[str, dict], source: str = "") -> str:
    """The CV sentence's figures: Dice of ``rows`` against ``mr-t2-unet``'s CV on the same cases
    (``t2``: its ``cv_summary.json`` cases by id), and whether all 14 CHAOS CV cases are in."""
    same = [t2[r["case"]] for r in rows if r["case"] in t2]
    return (f"Dice right {_mean(rows, 'dice_kidney_right')}, left {_mean(rows, 'dice_kidney_left')}, against "
            f"{_mean(same, 'dice_kidney_right')} / {_mean(same, 'dice_kidney_left')} for `mr-t2-unet` on the same cases"
            f"{source}." + ("" if len(rows) >= 14 else " The other folds were not run yet, so there is no 5-fold figure."))


def _relative(path: str) -> str:
    """An absolute data path as seen from the repository root (``../shared/data/...``)."""
    return os.path.relpath(path, Path(__file__).resolve().parents[1]) if os.path.isabs(path) else path


def _latest(rows: list[dict], model: str) -> list[dict]:
    """The model's latest row of each case it was scored on (a model may be scored on its
    domains in separate runs), in the order the cases were first scored; ``model`` may be
    ``NAME=TAG_PREFIX`` (only rows whose tag starts with TAG_PREFIX)."""
    model, _, prefix = model.partition("=")
    mine = [r for r in rows if r["model"] == model and r.get("tag", "").startswith(prefix)]
    if not mine:
        raise SystemExit(f"no rows of model {model!r}")
    latest: dict[tuple[str, str], dict] = {}
    for r in mine:
        key = (r["domain"], r["case"])
        if key not in latest or r["date"] >= latest[key]["date"]:
            latest[key] = r
    return list(latest.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--final", required=True, type=Path, nargs="+",
                    help="run folder(s) of the model to ship; two or more are shipped as their softmax ensemble")
    ap.add_argument("--rows", required=True, type=Path)
    ap.add_argument("--final-name", required=True)
    ap.add_argument("--proxy-name", default=None, help="optional: the recipe without the Siemens scans")
    ap.add_argument("--lodo-name", required=True)
    ap.add_argument("--cv-names", nargs="*", default=[])
    ap.add_argument("--cv-single", action="store_true",
                    help="the CV folds are single models while the shipped model is an ensemble: their rows show no "
                         "low_confidence (their uncertain_fraction is not on the ensemble's scale)")
    ap.add_argument("--cv-iterations", type=int, default=None,
                    help="training length of the CV folds when it differs from the shipped model's (the card says so)")
    ap.add_argument("--cv-scoring", default=None,
                    help="how the CV rows were predicted when not with the shipped settings, e.g. 'one plain pass and "
                         "the argmax' (the card says so)")
    ap.add_argument("--cv-final-names", nargs="*", default=[],
                    help="CHAOS CV folds of the shipped model's own recipe, length and seeds (the same ensemble); "
                         "any number of the 5 folds")
    ap.add_argument("--qc-settings", type=Path, default=None)
    ap.add_argument("--qc-settings-no-tta", type=Path, default=None,
                    help="benchmarks/mr_qc_thresholds.py JSON from rows made with one plain pass (--fast); "
                         "without it --fast applies the threshold above")
    ap.add_argument("--qc-three-planes", type=Path, default=None,
                    help="JSON with low_confidence_threshold_three_planes, _no_tta and chosen_on "
                         "(benchmarks/mr_qc_three_planes.py); without it one threshold serves every prediction")
    ap.add_argument("--inference-settings", type=Path, default=None,
                    help="JSON with tta_shifts_px, kidney_threshold and chosen_by (benchmarks/mr_multiprotocol_settings.py); "
                         "without it: one plain pass and the argmax")
    ap.add_argument("--peer-rows", type=Path, default=None,
                    help="benchmarks/results/peer_examples.jsonl: the card quotes its latest rows of "
                         "`mr-multiprotocol-unet` (this model on the peers' example scans)")
    ap.add_argument("--dest", type=Path, default=Path("src/kidneyseg/assets/models/mr_multiprotocol_kidney"))
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    final, lodo = _latest(rows, args.final_name), _latest(rows, args.lodo_name)
    proxy = _latest(rows, args.proxy_name) if args.proxy_name else []
    cv = [r for name in args.cv_names for r in _latest(rows, name)]
    cv_final = [r for name in args.cv_final_names for r in _latest(rows, name)]
    if not any(r["domain"] == "ukat" for r in lodo):  # before the shipped folder is touched
        raise SystemExit(f"{args.rows}: {args.lodo_name!r} has no ukat rows to quote as leave-one-domain-out")
    whole = [r for r in lodo + final + cv + cv_final if r.get("kidney_right_ref_ml") is not None]
    vols = [r[k] for r in whole for k in ("kidney_right_ref_ml", "kidney_left_ref_ml")]
    validated = (round(min(vols), 1), round(max(vols), 1))
    threshold, qc_how = 1.0, "as many uncertain voxels as confident ones"
    if args.qc_settings:
        qc = json.loads(args.qc_settings.read_text())
        threshold, validated = qc["low_confidence_threshold"], tuple(qc["validated_volume_ml"])
        qc_how = ("the largest uncertain_fraction of a held-out success (no kidney below Dice 0.80): "
                  "benchmarks/mr_qc_thresholds.py, rule in benchmarks/README.md"
                  + (f"; chosen on {qc['chosen_on']}" if qc.get("chosen_on") else ""))
    fast = json.loads(args.qc_settings_no_tta.read_text()) if args.qc_settings_no_tta else None
    fast_threshold, fast_on = (None, "") if fast is None else (fast["low_confidence_threshold"], fast.get("chosen_on", ""))
    three = json.loads(args.qc_three_planes.read_text()) if args.qc_three_planes else {}
    three_threshold = three.get("low_confidence_threshold_three_planes")
    three_fast = three.get("low_confidence_threshold_three_planes_no_tta")
    dest, runs = args.dest, args.final
    staged = dest.with_name(dest.name + ".staged")
    if staged.exists():
        shutil.rmtree(staged)
    if len(runs) > 1:  # the members' weights, config.json and ensemble.json, checked by make_ensemble
        make_ensemble(runs, staged)
        spec = json.loads((staged / ENSEMBLE).read_text())
        for m in spec["members"]:  # provenance without this machine's paths
            m["source"] = _relative(str(Path(m["source"]).resolve()))
        (staged / ENSEMBLE).write_text(json.dumps(spec, indent=2) + "\n")
        (staged / "inference.json").unlink(missing_ok=True)  # written below
    else:
        staged.mkdir(parents=True)
        shutil.copy2(runs[0] / "model.pt", staged / "model.pt")
        shutil.copy2(runs[0] / "config.json", staged / "config.json")
    for i, run in enumerate(runs):
        suffix = "" if i == 0 else f"_{i}"
        shutil.copy2(run / "training_log.csv", staged / f"training_log{suffix}.csv")
        shutil.copy2(run / "training_summary.json", staged / f"training_summary{suffix}.json")
    if dest.exists():
        shutil.rmtree(dest)
    staged.rename(dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["dataset"] = _relative(cfg["dataset"])  # data paths relative to the repository, not this machine
    cfg["extra_datasets"] = [[_relative(d), layout] for d, layout in cfg.get("extra_datasets", [])]
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    chosen = (InferenceConfig.from_dict(json.loads(args.inference_settings.read_text())) if args.inference_settings else
              InferenceConfig(chosen_by="one plain pass and the argmax (no test-time augmentation or threshold was "
                                        "selected for this model)"))
    fast_how = "" if fast is None else (
        f"; low_confidence_threshold_no_tta = {fast_threshold} (the same rule on the same cases predicted "
        "with one plain pass, as --fast runs" + (f": {fast_on}" if fast_on else "") + ")")
    three_how = "" if three_threshold is None else (
        f"; low_confidence_threshold_three_planes = {three_threshold}, _no_tta = {three_fast} (predictions averaged "
        f"over three planes: {three.get('chosen_on', '')})")
    settings = chosen.replace(
        validated_volume_ml=validated, low_confidence_threshold=threshold,
        low_confidence_threshold_no_tta=fast_threshold,
        low_confidence_threshold_three_planes=three_threshold,
        low_confidence_threshold_three_planes_no_tta=three_fast,
        qc_chosen_by=("scripts/ship_multiprotocol.py: validated_volume_ml = smallest and largest expert single-kidney volume "
                      "of the whole-volume cases this recipe was scored on held out (model card); low_confidence_threshold = "
                      f"{threshold} ({qc_how})" + fast_how + three_how))
    write_inference_config(settings, dest)
    cfg = json.loads((dest / "config.json").read_text())
    members = read_ensemble(dest)
    seeds = [m.get("seed", cfg["seed"]) for m in members]  # ensemble.json records each member's seed
    minutes = [json.loads((dest / f"training_summary{'' if i == 0 else f'_{i}'}.json").read_text())["train_seconds"] / 60
               for i in range(len(members))]
    threads = [json.loads((run / "config.json").read_text()).get("num_threads", cfg["num_threads"]) for run in runs]
    n_params = sum(v.numel() for v in torch.load(dest / "model.pt", map_location="cpu", weights_only=True).values())
    size_mb = sum((dest / m["weights"]).stat().st_size for m in members) / 1e6
    files = ", ".join(f"`{m['weights']}` (seed {seed}, sha256 `{sha256(dest / m['weights'])}`)"
                      for m, seed in zip(members, seeds))
    members_text = (f"the softmax average of {len(runs)} networks of one recipe trained with seeds {', '.join(map(str, seeds))}"
                    if len(runs) > 1 else "one network")
    what = members_text + (" (`ensemble.json`; `kidneyseg ensemble`)" if len(runs) > 1 else "")
    ukat_whole = [r for r in lodo if r["domain"] == "ukat" and r["scope"] == "volume"]
    ukat_slices = [r for r in lodo if r["domain"] == "ukat" and r["scope"] != "volume"]
    ukat_all = ukat_whole + ukat_slices
    weak, strong = (("left", "right") if _average(ukat_all, "dice_kidney_left") <= _average(ukat_all, "dice_kidney_right")
                    else ("right", "left"))
    siemens = [r for r in proxy if r["domain"] == "ukat" and r["case"].startswith("siemens")]
    lines = [
        "# Model card: `mr_multiprotocol_kidney` (pipeline `mr-multiprotocol-unet`)", "",
        "Left and right kidney segmentation on abdominal MRI of any plane and contrast, trained with domain "
        "randomisation (images synthesised from label maps, SynthSeg: Billot et al., Medical Image Analysis 86, 2023). "
        "The default pipeline `mr-auto` uses it for coronal, sagittal and near-isotropic scans, for axial scans covering "
        "at least 150 mm along S-I (there it averages all three planes and is ahead of `mr_t2_kidney` in CHAOS "
        "cross-validation, below), and for axial slabs on which `mr_t2_kidney` is not confident or finds no kidney.", "",
        f"- **Date**: {dt.date.today().isoformat()}",
        f"- **Files**: {size_mb:.1f} MB, {n_params:,} parameters per network: {files}.",
        f"- **Model**: {what}.",
        "- **Labels written**: 1 `kidney_right`, 2 `kidney_left` (patient's sides, from world coordinates after "
        "connected components, as `mr-t2-unet`).",
        f"- **Architecture**: MONAI `UNet` 2D, channels {tuple(cfg['channels'])}, {cfg['num_res_units']} residual unit(s), "
        "instance norm, one input slice, classes background / kidney / liver / spleen.",
        "- **Inference**: the volume is z-scored (0.5/99.5 percentile clip), cut into slices in its acquisition plane "
        "(across the thickest voxel side; all three planes averaged for a near-isotropic voxel"
        + ({"all": "; all three planes averaged for every scan",
            "coverage": f"; all three planes averaged for a scan covering at least {PLANES_COVERAGE_MM:.0f} mm along its "
                        "slice axis, e.g. an axial abdomen, the acquisition plane alone for a thinner slab such as a "
                        "coronal kidney scan (`\"planes\": \"coverage\"`; the added planes get one plain pass and are cut at "
                        "the model's spacing)"}.get(settings.planes, ""))
        + f"), each resampled to {cfg['target_spacing_mm']} mm; "
        + (f"{len(settings.tta_shifts_px)} passes per network (in-plane shifts {', '.join(str(tuple(v)) for v in settings.tta_shifts_px)} px), "
           if len(settings.tta_shifts_px) > 1 else "one pass per network, ")
        + "mean softmax, "
        + ("argmax" if settings.kidney_threshold is None else
           f"kidney where the kidney probability is >= {settings.kidney_threshold}")
        + f"; `inference.json` holds these and the QC settings (chosen by: {settings.chosen_by}).",
        f"- **Training**: {cfg['iterations']} iterations of AdamW (lr {cfg['learning_rate']}, poly decay), batch "
        f"{cfg['batch_size']} patches of {cfg['patch_size'][0]} x {cfg['patch_size'][1]} at {cfg['target_spacing_mm']} mm "
        f"isotropic, planes axial : coronal : sagittal = {cfg['plane_weights']['axial']} : {cfg['plane_weights']['coronal']} : "
        f"{cfg['plane_weights']['sagittal']}; {100 * cfg['synth_fraction']:.0f} % of patches synthesised from label maps "
        f"(expert kidney in {cfg['kidney_subclasses']} sub-classes, liver, spleen, {cfg['tissue_classes']} Gaussian-mixture "
        "tissue classes; random contrast, slab thickness 1.5-8 mm, in-plane resolution 1.5-3.5 mm, bias, gamma, noise), "
        "the rest real slices (half through a random intensity curve); "
        + ("axial and coronal patches mirrored left-right half of the time; " if cfg.get("augment_flip_lr") else "")
        + (f"an elastic deformation with probability {cfg['augment_elastic_prob']}; " if cfg.get("augment_elastic_prob") else "")
        + (f"the tissue within {cfg['perirenal_shell_mm']} mm of the kidneys a class of its own in the label maps; "
           if cfg.get("perirenal_shell_mm") else "")
        + (f"the saved weights the equal-weight average (SWA) of every {cfg['weight_average_every']}th step from "
           f"{100 * cfg['weight_average_from']:.0f} % of the iterations on; " if cfg.get("weight_average_from") is not None else "")
        + "Dice + cross-entropy for partly labelled targets, "
        f"foreground oversampling {cfg['foreground_fraction']}, seed {', '.join(map(str, seeds))}. Full config: `config.json`; recipe "
        "`configs/mr_multiprotocol.json`.",
        "- **Training data**: CHAOS MR T2-SPIR, 14 cases (not case 39, the bundled example; CC BY-SA 4.0, Kavur et al., "
        "Medical Image Analysis 69, 2021, Zenodo 3431873) and all 23 ukat gradient-echo scans (3 with whole-kidney masks, "
        "20 with one labelled slice; UKRIN Kidney Analysis Toolbox, GPL-3.0).",
        f"- **Training time**: {' and '.join(f'{m:.1f}' for m in minutes)} min on {platform.machine()} CPU, torch "
        f"{torch.__version__}, {' and '.join(str(n) for n in threads)} intra-op thread(s) on a 2-core machine whose speed and load varied between runs"
        + (" (logs: `training_log*.csv`, `training_summary*.json`)." if len(runs) > 1 else "."), "",
        "## How it was validated (`benchmarks/mr_generalisation.py`)", "",
        "No test touches a scan the scored model was trained on. Models of this recipe, differing only in data:", "",
        f"1. **Leave-one-domain-out** (`{args.lodo_name}`: CHAOS only, no ukat) on the ukat gradient-echo scans: "
        f"whole kidneys Dice right {_mean(ukat_whole, 'dice_kidney_right')}, left {_mean(ukat_whole, 'dice_kidney_left')} "
        f"(3 scans); labelled slices right {_mean(ukat_slices, 'dice_kidney_right')}, left {_mean(ukat_slices, 'dice_kidney_left')} "
        f"(20 scans). The shipped `mr-t2-unet` model gets 0.00 on all of them.",
    ]
    if proxy:
        lines += [f"2. **Held-out scanner** (`{args.proxy_name}`: CHAOS + ukat GE and Philips) on the 5 Siemens 3 T scans: "
                  f"Dice right {_mean(siemens, 'dice_kidney_right')}, left {_mean(siemens, 'dice_kidney_left')}."]
    lines += [
        f"{3 if proxy else 2}. **This model** on CHAOS case 39 (never trained on): Dice right "
        f"{_mean([r for r in final if r['domain'] == 'chaos'], 'dice_kidney_right')}, left "
        f"{_mean([r for r in final if r['domain'] == 'chaos'], 'dice_kidney_left')}.",
    ]
    t2 = {c["case"]: c for c in json.loads((Path(__file__).resolve().parents[1] / "src/kidneyseg/assets/models/"
                                            "mr_t2_kidney/cv_summary.json").read_text())["cases"]}
    item = 4 if proxy else 3
    if cv:
        lines += [f"{item}. **CHAOS cross-validation** of this recipe (CHAOS and all ukat scans in training, "
                  f"the fold's CHAOS cases held out; folds {', '.join(n.partition('=')[0] for n in args.cv_names)} of 5, {len(cv)} cases: "
                  f"{', '.join(r['case'] for r in cv)}): {_against_t2(cv, t2, ' (its `cv_summary.json`)')}"
                  + (" Each fold is one network (seed 0), not an ensemble"
                     + ("." if cv_final else "; an ensemble's CV was not run.")
                     if args.cv_single else "")
                  + (f" The folds were trained for {args.cv_iterations} iterations, this model for {cfg['iterations']}"
                     + ("; the CV of this training length follows." if cv_final else "; the CV of this training length was not run.")
                     if args.cv_iterations not in (None, cfg["iterations"]) else "")
                  + (f" The folds were predicted with {args.cv_scoring}, not this model's inference settings."
                     if args.cv_scoring else "")]
        item += 1
    if cv_final:
        lines += [f"{item}. **CHAOS cross-validation of this model's training** (same recipe, {cfg['iterations']} iterations, "
                  f"{members_text}; the fold's CHAOS cases held out; {len(args.cv_final_names)} of 5 folds "
                  f"({', '.join(n.partition('=')[0] for n in args.cv_final_names)}), {len(cv_final)} cases: {', '.join(r['case'] for r in cv_final)}): "
                  + _against_t2(cv_final, t2)]
    thresholds = (threshold, three_threshold)
    lines += ["", "### Rows", "", "QC flags as this model's settings raise them"
              + ("" if three_threshold is None else " (on CHAOS rows, axial abdomens, the three-plane threshold)") + ".", "",
              f"`{args.lodo_name}` (no ukat in training):", ""] + _table(lodo, thresholds, validated)
    if proxy:
        lines += ["", f"`{args.proxy_name}` (no Siemens scan in training):", ""] + _table(proxy, thresholds, validated)
    for name in args.cv_names:
        lines += ["", f"`{name.partition('=')[0]}` (cross-validation fold, this recipe"
                  + (", one network: its uncertain_fraction is not on the ensemble's scale" if args.cv_single else "")
                  + "):", ""] + _table(_latest(rows, name), thresholds, validated, confidence=not args.cv_single)
    for name in args.cv_final_names:
        lines += ["", f"`{name.partition('=')[0]}` (cross-validation fold of this model's training):", ""] + _table(_latest(rows, name), thresholds, validated)
    lines += ["", f"`{args.final_name}` (this model):", ""] + _table(final, thresholds, validated)
    if args.peer_rows is not None:
        lines += ["", "### Peers' example scans (`benchmarks/peer_examples.py`)", ""] + _peer_table(args.peer_rows)
    lines += [
        "", "## Domain checks", "",
        f"- `volume_outside_validated_range`: a kidney outside **{validated[0]}-{validated[1]} mL**, the smallest and largest "
        "expert single-kidney volume of the whole-volume cases above. The ukat single-slice scans cover 45-55 mm, so "
        "their whole-scan volumes are small and raise it even where the labelled slice is right.",
        f"- `low_confidence`: `uncertain_fraction` above **{threshold}** ({qc_how})"
        + ("." if three_threshold is None else
           f"; for a prediction that averages three planes (a scan covering at least {PLANES_COVERAGE_MM:.0f} mm along its "
           f"slice axis, or near-isotropic) above **{three_threshold}** ({three.get('chosen_on', '')}). Averaging planes "
           "makes a border of uncertain voxels of its own, so the one-plane threshold flagged good axial scans.")]
    if fast is not None:
        lines += [f"- With `--fast` (one plain pass per network): `uncertain_fraction` above "
                  f"**{fast_threshold}**" + ("" if three_fast is None else f" (three planes: **{three_fast}**)")
                  + ", the same rule on the same held-out cases predicted with one pass"
                  + (f" ({fast_on})." if fast_on else ".")]
    lines += [
        "",
        "## Intended use and limits", "",
        "Research volumetry of native adult kidneys on abdominal MRI acquired in any plane. Validated only as above: "
        "gradient-echo (ukat, three vendors: the first echo of dual-echo B0-map magnitude series, TE 2.2 ms at 1.5 T "
        "and 4.0 ms at 3 T; `kidneyseg segment` reads the magnitude of a multi-echo series' shortest echo, the same "
        "contrast, unless told otherwise with `--volume N`) and axial T2-SPIR (CHAOS). "
        + ("Coronal T2-weighted single-shot TSE and T1-weighted scans: only the three peers' example scans above, against "
           "the peers' results, not expert masks. " if args.peer_rows is not None else "")
        + "**Not validated** on "
        + ("" if args.peer_rows is not None else "coronal T2 HASTE, T1-weighted, ")
        + "Dixon, contrast-enhanced or diffusion scans, children, transplanted or diseased kidneys. "
        f"**The {weak} kidney is its weak side** (leave-one-domain-out on the ukat scans: {weak} Dice "
        f"{_mean(ukat_all, f'dice_kidney_{weak}')} against {_mean(ukat_all, f'dice_kidney_{strong}')} "
        f"on the {strong}). On an axial T2 slab (under 150 mm along S-I, acquisition plane only) it is less accurate than "
        "`mr-t2-unet` (CHAOS CV with the acquisition plane alone: 0.892 / 0.841). Check the overlay of every case; trust no volume "
        "with a QC flag raised.",
    ]
    (dest / "model_card.md").write_text("\n".join(lines) + "\n")
    print(f"shipped {dest} ({size_mb:.1f} MB), validated volume range {validated}")


if __name__ == "__main__":
    main()
