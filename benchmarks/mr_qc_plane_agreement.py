"""QC from the planes' agreement of a 2D multiplane model (rule: benchmarks/README.md, "QC from the
planes' agreement").

    python benchmarks/mr_qc_plane_agreement.py --rows NAME=DIR=TAG [--rows ...] [--peers] [--threads 2]

For every row of ``benchmarks/results/mr_generalisation.jsonl`` whose ``model`` is NAME and whose
``tag`` is TAG (held-out predictions of the model folder DIR), the scan is predicted twice more:
in its acquisition plane alone (the model's own test-time passes) and in the other two planes
averaged (one plain pass each). ``plane_dice_right`` / ``plane_dice_left`` is the Dice between the
two kidney masks on each side of the body midline
(:func:`kidneyseg.postprocess.quality.member_dice`); a near-isotropic scan counts its axial plane as
the acquisition plane. The row's Dice comes from the jsonl row, its QC flags are recomputed with the shipped model's
thresholds (as its model card's tables are); failure = a kidney below
Dice 0.80. The flag ``plane_dice < threshold`` is judged leave-one-case-out, the threshold the
smallest ``plane_dice`` of a success among the other rows.

``--peers`` also computes the signal for the shipped model on the peers' example scans
(``peer_examples.py``'s cache), reported only. Rows: ``results/mr_qc_plane_agreement.jsonl``;
summary: ``results/mr_qc_plane_agreement.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import kidneyseg.inference.predict as predict  # noqa: E402
from kidneyseg.datasets.layouts import chaos_cases, ukat_cases  # noqa: E402
from kidneyseg.io.orientation import acquisition_axes, to_canonical  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.postprocess import body_midline_x_mm  # noqa: E402
from kidneyseg.inference.settings import read_inference_config  # noqa: E402
from kidneyseg.postprocess.quality import member_dice, outside_range  # noqa: E402
from kidneyseg.models.store import default_model_dir  # noqa: E402
from kidneyseg.pipelines.mr_t2 import MRKidneyPipeline  # noqa: E402
from kidneyseg.training.data import read_case  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from isotropic_slabs import forced_planes  # noqa: E402
from mr_qc_thresholds import is_failure  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
MIN_DICE = 0.80


def _kidney(pipe: MRKidneyPipeline, image, canonical, axes: list[int]):
    """Bool kidney mask (canonical grid) of ``pipe``'s network run in ``axes`` only, and the
    prepared image; ``None`` if none of those planes is wide enough for a kidney."""
    # the planes predict_multiplane would not leave out as too narrow for a kidney
    wide = list(predict.plane_sizes(image, canonical, axes, pipe.bundle.config.target_spacing_mm))
    if not wide:
        return None, None
    with forced_planes(wide):
        labels, prepared = predict.predict_labels(pipe.bundle.network, image, pipe.bundle.config,
                                                  pipe.bundle.device, pipe.bundle.inference)
    k = pipe.bundle.config.kidney_classes
    return (labels >= 1) & (labels <= k), prepared


def plane_agreement(pipe: MRKidneyPipeline, image) -> dict:
    """``plane_dice_right`` / ``plane_dice_left`` of one scan (``None`` without other planes)."""
    canonical, _ = to_canonical(image, copy=False)
    acq = acquisition_axes(canonical.spacing_mm)
    acq = [2] if len(acq) == 3 else acq
    own, prepared = _kidney(pipe, image, canonical, acq)
    other, _ = _kidney(pipe, image, canonical, [a for a in range(3) if a not in acq])
    if other is None:
        return {"plane_dice_right": None, "plane_dice_left": None}
    midline = body_midline_x_mm(prepared.canonical.array, prepared.canonical.affine)
    d = member_dice([own, other], prepared.canonical.affine, midline)
    return {"plane_dice_right": round(d["kidney_right"], 3), "plane_dice_left": round(d["kidney_left"], 3),
            "acquisition_kidney_ml": round(float(own.sum()) * float(np.prod(canonical.spacing_mm)) / 1000, 1),
            "other_planes_kidney_ml": round(float(other.sum()) * float(np.prod(canonical.spacing_mm)) / 1000, 1)}


def judge(rows: list[dict]) -> tuple[list[str], dict]:
    """Leave-one-case-out flags and the counts the rule asks for."""
    md = ["| model | case | Dice R / L | failure | plane_dice R / L | threshold without it | plane flag | "
          "low_confidence | volume flag |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    counts = {"failures": 0, "successes": 0, "flagged_failures": 0, "flagged_successes": 0, "new_failures": 0}
    for i, r in enumerate(rows):
        others = rows[:i] + rows[i + 1:]
        t = min((min(o["plane_dice_right"], o["plane_dice_left"]) for o in others if not is_failure(o, MIN_DICE)), default=0.0)
        pd = min(r["plane_dice_right"], r["plane_dice_left"])
        flag = pd < t
        fail = is_failure(r, MIN_DICE)
        old = bool(r.get("low_confidence")) or bool(r.get("volume_outside_validated_range"))
        counts["failures" if fail else "successes"] += 1
        counts[("flagged_failures" if fail else "flagged_successes")] += int(flag)
        counts["new_failures"] += int(flag and fail and not old)
        md.append(f"| {r['model']} | {r['case']} | {r.get('dice_kidney_right')} / {r.get('dice_kidney_left')} | "
                  f"{'yes' if fail else ''} | {r['plane_dice_right']} / {r['plane_dice_left']} | {t:.3f} | "
                  f"{'FLAG' if flag else ''} | {r.get('low_confidence')} | {r.get('volume_outside_validated_range')} |")
    counts["threshold_all_rows"] = round(min(min(r["plane_dice_right"], r["plane_dice_left"])
                                             for r in rows if not is_failure(r, MIN_DICE)), 3)
    return md, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", action="append", required=True, metavar="NAME=DIR=TAG")
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "mr_qc_plane_agreement.jsonl")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    cases = {("ukat", c.case_id): c for c in ukat_cases(DATA / "ukat_kidney_masks", MR_KIDNEYS)}
    cases.update({("chaos", c.case_id): c for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS)})
    source = [json.loads(line) for line in open(RESULTS / "mr_generalisation.jsonl")]
    shipped = read_inference_config(default_model_dir("mr_multiprotocol_kidney"))
    rows = []
    with open(args.out, "a") as f:
        for spec in args.rows:
            name, folder, tag = spec.split("=", 2)
            pipe = MRKidneyPipeline.load(folder, "cpu", "mr-multiprotocol-unet")
            for src in [r for r in source if r["model"] == name and r["tag"] == tag]:
                image, _ = read_case(cases[(src["domain"], src["case"])])
                row = {k: src.get(k) for k in ("model", "tag", "domain", "case", "scope", "dice_kidney_right",
                                               "dice_kidney_left", "uncertain_fraction", "scan_kidney_right_ml",
                                               "scan_kidney_left_ml")}
                # today's flags, as the shipped model's settings raise them (the model card's rule)
                row["low_confidence"] = bool(row["uncertain_fraction"] > shipped.low_confidence_threshold)
                row["volume_outside_validated_range"] = outside_range(
                    {f"{n}_ml": row[f"scan_{n}_ml"] for n in MR_KIDNEYS.values()}, list(MR_KIDNEYS.values()),
                    shipped.validated_volume_ml)
                row.update(plane_agreement(pipe, image), date=when)
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), flush=True)
        peers = []
        if args.peers:
            from kidneyseg.io import read_image

            cache = ROOT / "benchmarks" / ".cache" / "peer_examples"
            pipe = MRKidneyPipeline.load(str(default_model_dir("mr_multiprotocol_kidney")), "cpu",
                                         "mr-multiprotocol-unet")
            for path in [cache / "renalsegmentor/segment/data/test_data/test_sub_01.PAR",
                         cache / "renalsegmentor/segment/data/test_data/test_sub_02.PAR",
                         cache / "totalsegmentator/example_mr_sm.nii.gz"]:
                row = {"model": "shipped", "case": path.name, **plane_agreement(pipe, read_image(path)), "date": when}
                peers.append(row)
                f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    md, counts = judge(rows)
    text = ["# QC from the planes' agreement", "",
            f"Written by `benchmarks/mr_qc_plane_agreement.py` ({when}); rule: benchmarks/README.md, "
            "\"QC from the planes' agreement\". Failure: a kidney below Dice 0.80.", "", *md, "",
            "Counts (leave-one-case-out): " + json.dumps(counts)]
    if peers:
        text += ["", "Peers' example scans, the shipped model (reported, not judged):", "",
                 "| scan | plane_dice R / L | acquisition-plane kidney mL | other planes' kidney mL |",
                 "| --- | --- | --- | --- |"]
        text += [f"| {p['case']} | {p['plane_dice_right']} / {p['plane_dice_left']} | {p.get('acquisition_kidney_ml')} | "
                 f"{p.get('other_planes_kidney_ml')} |" for p in peers]
    args.out.with_suffix(".md").write_text("\n".join(text) + "\n")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
