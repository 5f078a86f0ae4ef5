"""MR kidney models across protocols: leave-one-domain-out on ukat, CHAOS held-out cases.

    python benchmarks/mr_generalisation.py --model NAME=DIR [--model NAME=DIR ...] [--chaos-cases 39]
        [--tag TEXT] [--threads 1]

For every model (``shipped`` = the package's model; a folder from ``kidneyseg train``;
``auto:DIR`` = pipeline ``mr-auto``, the shipped T2 model routing to DIR as its multiprotocol model):

- **ukat** (``../shared/data/ukat_kidney_masks``, UKRIN Kidney Analysis Toolbox, GPL-3.0):
  coronal gradient-echo magnitude scans from GE 1.5 T, Philips 3 T and Siemens 3 T. The three
  whole-kidney scans (ge_01, philips_01, siemens_01) give Dice, HD95 and volume per kidney; the
  20 single-slice scans give Dice per kidney on the labelled slice only (the mask drawn there
  against the prediction there). A model trained without ukat data is scored on a protocol it
  never saw: the stand-in for protocols nobody here has labels for.
- **CHAOS** (``../shared/data/chaos_t2``, CC BY-SA 4.0): the listed cases, which must be
  held out of the model's training (by default case 39, the bundled example, excluded from
  every shipped and benchmark model).

Every row also carries the QC values (``uncertain_fraction``, ``low_confidence``,
``volume_outside_validated_range``) and the whole scan's kidney lengths and split (``scan_kidney_*_length_mm``,
``scan_split_right_pct``) so the flags can be checked against the failures. Rows are appended to
``benchmarks/results/mr_generalisation.jsonl``; a Markdown summary is written to
``benchmarks/results/mr_generalisation.md`` (all rows in the file, grouped by model and tag).
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

from kidneyseg.datasets.layouts import chaos_cases, ukat_cases  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.metrics import MR_KIDNEY_REGIONS, dice, evaluate_labels  # noqa: E402
from kidneyseg.models.store import default_model_dir  # noqa: E402
from kidneyseg.pipelines.mr_auto import MRAutoPipeline  # noqa: E402
from kidneyseg.pipelines.mr_t2 import MRKidneyPipeline  # noqa: E402
from kidneyseg.training.data import read_case  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def expert_labels(case, ref_img) -> np.ndarray:
    """The case's reference as kidneyseg label values (uint8 ``(X, Y, Z)``; values the case's
    ``label_values`` do not list become 0)."""
    return case.kidneyseg_labels(np.asarray(ref_img.array).reshape(ref_img.shape[:3]))


def score_case(pipe: MRKidneyPipeline, case, domain: str) -> dict:
    """Segment one case and score it (whole volume, or the labelled slice only)."""
    image, ref_img = read_case(case)
    t0 = time.perf_counter()
    result = pipe.segment(image)
    return score_result(result, time.perf_counter() - t0, case, image, expert_labels(case, ref_img), domain)


def score_result(result, seconds: float, case, image, ref: np.ndarray, domain: str) -> dict:
    """One row: ``result`` (a :class:`~kidneyseg.pipelines.Result` of ``image``) scored against
    ``ref`` (kidneyseg label values on ``image``'s grid), whole volume or the labelled slice."""
    pred = np.asarray(result.mask.array)
    row = {"domain": domain, "case": case.case_id, "spacing_mm": [round(float(s), 3) for s in image.spacing_mm],
           "seconds": round(seconds, 2),
           **{("routed_model" if k == "model" else k): v for k, v in result.qc.items() if k != "removed_voxels"}}
    for name in MR_KIDNEYS.values():  # the whole scan's predicted volume, what the volume QC flag judges
        row[f"scan_{name}_ml"] = round(float(result.volumes_ml[f"{name}_ml"]), 1)
    row.update({f"scan_{k}": v for k, v in result.measures.items()})  # lengths (mm) and the split (%)
    if case.labelled_slices is not None:
        axis, idx = case.labelled_slices
        sl = [slice(None)] * 3
        sl[axis] = idx[0]
        p2, r2 = pred[tuple(sl)], ref[tuple(sl)]
        row["scope"] = "labelled slice"
        for v, name in MR_KIDNEYS.items():
            if (r2 == v).any():
                row[f"dice_{name}"] = round(dice(p2 == v, r2 == v), 4)
        row["dice_kidneys"] = round(dice(p2 > 0, r2 > 0), 4)
        return row
    row["scope"] = "volume"
    rows = {r["region"]: r for r in evaluate_labels(pred, ref, image.spacing_mm, MR_KIDNEY_REGIONS,
                                                    voxel_volume_ml=image.voxel_volume_ml)}
    for name in MR_KIDNEYS.values():
        r = rows[name]
        row[f"dice_{name}"] = round(float(r["dice"]), 4)
        row[f"hd95_mm_{name}"] = None if not np.isfinite(r["hd95_mm"]) else round(float(r["hd95_mm"]), 1)
        row[f"{name}_ml"] = round(float(r["volume_pred_ml"]), 1)
        row[f"{name}_ref_ml"] = round(float(r["volume_ref_ml"]), 1)
    row["dice_kidneys"] = round(dice(pred > 0, ref > 0), 4)
    tp, tr = row["kidney_right_ml"] + row["kidney_left_ml"], row["kidney_right_ref_ml"] + row["kidney_left_ref_ml"]
    row["total_volume_error_pct"] = round(100 * (tp - tr) / tr, 1)
    return row


def load_pipeline(folder: str):
    """``shipped`` (or empty): the package's T2 model; ``auto:DIR``: pipeline ``mr-auto`` with the
    shipped T2 model and DIR as its multiprotocol model (``auto:shipped``: both shipped); else a
    model folder."""
    if folder.startswith("auto:"):
        multi = folder[len("auto:"):]
        multi = str(default_model_dir("mr_multiprotocol_kidney")) if multi in ("", "shipped") else multi
        return MRAutoPipeline(MRKidneyPipeline.load(None, "cpu"),
                              lambda: MRKidneyPipeline.load(multi, "cpu", "mr-multiprotocol-unet"))
    return MRKidneyPipeline.load(None if folder in ("", "shipped") else folder, "cpu")


def summarise(rows: list[dict]) -> list[str]:
    """Markdown tables: per (model, tag) the mean Dice per kidney per domain, then all rows."""
    lines = ["| model | tag | domain | scope | n | Dice right | Dice left | mean abs. TKV error % | seconds / volume |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r.get("tag", ""), r["domain"], r["scope"]), []).append(r)
    for (model, tag, domain, scope), rs in groups.items():
        def mean(key):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return f"{np.mean(vals):.3f}" if vals else "-"
        errs = [abs(r["total_volume_error_pct"]) for r in rs if "total_volume_error_pct" in r]
        lines.append(f"| {model} | {tag} | {domain} | {scope} | {len(rs)} | {mean('dice_kidney_right')} | "
                     f"{mean('dice_kidney_left')} | {np.mean(errs):.1f} |" if errs else
                     f"| {model} | {tag} | {domain} | {scope} | {len(rs)} | {mean('dice_kidney_right')} | "
                     f"{mean('dice_kidney_left')} | - |")
        lines[-1] += f" {np.mean([r['seconds'] for r in rs]):.1f} |"
    lines += ["", "| model | tag | domain | case | Dice right | Dice left | HD95 right / left (mm) | volume right / left, pred / ref (mL) | uncertain_fraction | low_confidence | volume_outside_validated_range |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        vol = (f"{r['kidney_right_ml']:.0f} / {r['kidney_right_ref_ml']:.0f}, {r['kidney_left_ml']:.0f} / {r['kidney_left_ref_ml']:.0f}"
               if "kidney_right_ml" in r else "slice")
        hd = f"{r.get('hd95_mm_kidney_right')} / {r.get('hd95_mm_kidney_left')}" if "kidney_right_ml" in r else "-"
        lines.append(f"| {r['model']} | {r.get('tag', '')} | {r['domain']} | {r['case']} | {r.get('dice_kidney_right', '-')} | "
                     f"{r.get('dice_kidney_left', '-')} | {hd} | {vol} | {r.get('uncertain_fraction', '-')} | "
                     f"{r.get('low_confidence', '-')} | {r.get('volume_outside_validated_range', '-')} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                    help="a model to score; DIR 'shipped' for the package's model, 'auto:DIR' for mr-auto "
                         "with DIR as the multiprotocol model")
    ap.add_argument("--chaos-cases", nargs="*", default=["39"], help="CHAOS cases held out of every model given")
    ap.add_argument("--no-ukat", action="store_true", help="skip the ukat scans (models trained on them)")
    ap.add_argument("--ukat-cases", nargs="*", default=None,
                    help="only these ukat scans (e.g. a scanner held out of the model's training)")
    ap.add_argument("--member-agreement", action="store_true",
                    help="ensembles: also record member_dice_right / member_dice_left (the networks' agreement)")
    ap.add_argument("--fast", action="store_true", help="one plain pass per network, as `kidneyseg segment --fast`")
    ap.add_argument("--tag", default="", help="free text stored with the rows (e.g. the training run)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "mr_generalisation.jsonl")
    ap.add_argument("--summarise", action="store_true", help="only rewrite the .md from the rows in --out")
    args = ap.parse_args()
    if not args.model and not args.summarise:
        ap.error("give --model NAME=DIR (or --summarise)")
    import torch

    torch.set_num_threads(args.threads)
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    machine = f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
    ukat = [] if args.no_ukat else [c for c in ukat_cases(DATA / "ukat_kidney_masks", MR_KIDNEYS)
                                    if args.ukat_cases is None or c.case_id in set(args.ukat_cases)]
    chaos = [c for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS) if c.case_id in set(args.chaos_cases)]
    with open(args.out, "a") as f:
        for spec in ([] if args.summarise else args.model):
            name, _, folder = spec.partition("=")
            pipe = load_pipeline(folder)
            if (args.fast or args.member_agreement) and not isinstance(pipe, MRKidneyPipeline):
                ap.error(f"--fast / --member-agreement: not for {folder} (mr-auto)")
            if args.fast:
                pipe.disable_tta()
            if args.member_agreement:
                pipe.member_agreement = True
            for domain, cases in (("ukat", ukat), ("chaos", chaos)):
                for case in cases:
                    row = {"model": name, "tag": args.tag, "date": when, "machine": machine,
                           **score_case(pipe, case, domain)}
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in open(args.out)]
    md = ["# MR kidney models across protocols", "",
          "Written by `benchmarks/mr_generalisation.py` from every row of `mr_generalisation.jsonl` "
          f"(latest run {rows[-1]['date']}, {rows[-1]['machine']}). ukat = coronal gradient echo, never in the "
          "training data of a model tagged leave-one-domain-out or CHAOS only; chaos = held-out axial T2-SPIR cases. "
          "Rows tagged 'validation domain' and 'TEST domain' follow the selection rule in benchmarks/README.md.",
          ""] + summarise(rows)
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")  # beside the rows it summarises


if __name__ == "__main__":
    main()
