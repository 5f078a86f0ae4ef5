"""Near-isotropic slabs: which planes a 2D multiplane model should average (stand-in data).

    python benchmarks/isotropic_slabs.py --model DIR [--model DIR ...] [--planes coverage fov axial]
        [--threads 2]

No near-isotropic slab with expert kidney masks is at hand, so CHAOS cases (``../shared/data/chaos_t2``,
CC BY-SA 4.0) are made into them. Each ``--model`` is a cross-validation fold's model folder
(``kidneyseg train --fold K``; its ``config.json`` gives the fold, the split is
:func:`kidneyseg.training.trainer.split_folds`), and only the cases that fold held out are scored.
Each case, in RAS, is resampled to 3 mm isotropic (:func:`kidneyseg.preprocess.resample_isotropic`:
trilinear image, nearest labels) and cut along S-I into slabs: ``c60`` (60 mm centred on the
kidneys' S-I centre), ``up60`` / ``down60`` (60 mm above / below that centre), ``c90`` (90 mm
centred), and ``full`` (the whole resampled scan, a control). Every slab is segmented with each
``--planes`` value of :class:`kidneyseg.inference.settings.InferenceConfig` (``axial``: the axial
plane alone, forced here for the control; not a model option).

Scores: Dice per kidney where the slab holds at least 10 mL of it, total kidney volume error (%)
where it holds at least 20 mL, seconds, and the QC values of the result (``uncertain_fraction``,
``low_confidence``, ``volume_outside_validated_range``). Rows go to ``benchmarks/results/isotropic_slabs.jsonl``,
the summary to ``isotropic_slabs.md``. Rule and result: benchmarks/README.md, "Near-isotropic slabs".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import kidneyseg.inference.predict as predict  # noqa: E402
from kidneyseg.datasets.layouts import chaos_cases  # noqa: E402
from kidneyseg.io.image import Image  # noqa: E402
from kidneyseg.io.orientation import to_canonical  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.metrics import dice  # noqa: E402
from kidneyseg.pipelines.mr_t2 import MRKidneyPipeline  # noqa: E402
from kidneyseg.preprocess import resample_isotropic  # noqa: E402
from kidneyseg.training.data import read_case  # noqa: E402
from kidneyseg.training.trainer import split_folds  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
ISO_MM = 3.0
SLABS_MM = {"c60": (60, 0.0), "up60": (60, 0.5), "down60": (60, -0.5), "c90": (90, 0.0)}
"""Slab name -> (length mm, offset of its centre from the kidneys' S-I centre, in slab lengths)."""
MIN_KIDNEY_ML = 10.0
MIN_TKV_ML = 20.0
QC_FIELDS = ("uncertain_fraction", "low_confidence", "volume_outside_validated_range")
"""QC values recorded with each row (rule "A QC threshold of its own for three-plane predictions")."""


def held_out_cases(folder: Path) -> list[str]:
    """The CHAOS case ids the fold model in ``folder`` was not trained on."""
    cfg = json.loads((folder / "config.json").read_text())
    ids = [c.case_id for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS)
           if c.case_id not in set(cfg.get("exclude_cases", []))]
    return split_folds(ids, cfg["folds"], cfg.get("fold_seed", 0))[cfg["fold"]]


def isotropic_case(case) -> tuple[Image, np.ndarray]:
    """The case in RAS at :data:`ISO_MM` isotropic: ``(image, labels)``, labels uint8 (0, 1 right,
    2 left) on the image's grid."""
    image, ref_img = read_case(case)
    canonical, _ = to_canonical(image)
    ref, _ = to_canonical(Image(case.kidneyseg_labels(np.asarray(ref_img.array).reshape(ref_img.shape[:3])),
                                ref_img.affine))
    sp = canonical.spacing_mm
    arr = resample_isotropic(canonical.array.astype(np.float32), sp, ISO_MM)
    lab = resample_isotropic(ref.array.astype(np.float32), sp, ISO_MM, mode="nearest-exact").astype(np.uint8)
    affine = canonical.affine.copy()
    affine[:3, :3] = canonical.affine[:3, :3] @ np.diag([ISO_MM / s for s in sp])
    return Image(arr, affine), lab


def slabs(image: Image, labels: np.ndarray) -> dict[str, tuple[Image, np.ndarray]]:
    """:data:`SLABS_MM` cut along the canonical S-I axis (2), plus ``full``."""
    zc = float(np.nonzero(labels > 0)[2].mean())
    out = {"full": (image, labels)}
    n = labels.shape[2]
    for name, (length, offset) in SLABS_MM.items():
        k = int(round(length / ISO_MM))
        z0 = int(round(zc + offset * k - k / 2))
        z0 = min(max(z0, 0), n - k)
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ np.array([0, 0, z0]) + image.affine[:3, 3]
        out[name] = (Image(np.ascontiguousarray(image.array[:, :, z0:z0 + k]), affine),
                     np.ascontiguousarray(labels[:, :, z0:z0 + k]))
    return out


def score(pred: np.ndarray, ref: np.ndarray) -> dict:
    ml = (ISO_MM ** 3) / 1000.0
    row = {}
    for v, name in MR_KIDNEYS.items():
        ref_ml = float((ref == v).sum()) * ml
        row[f"{name}_ref_ml"] = round(ref_ml, 1)
        row[f"{name}_ml"] = round(float((pred == v).sum()) * ml, 1)
        if ref_ml >= MIN_KIDNEY_ML:
            row[f"dice_{name}"] = round(dice(pred == v, ref == v), 4)
    tr = float((ref > 0).sum()) * ml
    if tr >= MIN_TKV_ML:
        row["tkv_error_pct"] = round(100 * (float((pred > 0).sum()) * ml - tr) / tr, 1)
    return row


def with_planes(pipe: MRKidneyPipeline, planes: str) -> MRKidneyPipeline:
    """A copy of ``pipe`` whose inference uses ``planes`` (``axial``: ``coverage`` settings, and
    the axial plane forced at run time by :func:`run`)."""
    p = MRKidneyPipeline(pipe.bundle)
    inference = dataclasses.replace(pipe.bundle.inference, planes="coverage" if planes == "axial" else planes)
    p.bundle = dataclasses.replace(pipe.bundle, inference=inference)
    return p


@contextlib.contextmanager
def forced_planes(axes: list[int]):
    """Inside the block, a multiplane model runs in ``axes`` (canonical axes) whatever its
    ``planes`` setting: :func:`kidneyseg.inference.predict.planes_used` is swapped for the block
    (benchmarks only; no model option does this)."""
    original = predict.planes_used
    predict.planes_used = lambda canonical, acquisition, mode: list(axes)
    try:
        yield
    finally:
        predict.planes_used = original


def run(pipe: MRKidneyPipeline, planes: str, image: Image):
    """Segment, with the axial plane alone when ``planes == "axial"`` (the control)."""
    if planes != "axial":
        return pipe.segment(image)
    with forced_planes([2]):
        return pipe.segment(image)


def summarise(rows: list[dict]) -> list[str]:
    planes = sorted({r["planes"] for r in rows})
    names = ["full"] + list(SLABS_MM)
    md = ["| slab | planes | kidneys scored | mean Dice | mean abs. TKV error % | seconds (median) |",
          "| --- | --- | --- | --- | --- | --- |"]
    for slab in names + ["all slabs (c60, up60, down60, c90)"]:
        for pl in planes:
            sel = [r for r in rows if r["planes"] == pl and (r["slab"] == slab or (slab.startswith("all") and r["slab"] != "full"))]
            d = [r[k] for r in sel for k in ("dice_kidney_right", "dice_kidney_left") if k in r]
            t = [abs(r["tkv_error_pct"]) for r in sel if "tkv_error_pct" in r]
            if not sel:
                continue
            md.append(f"| {slab} | {pl} | {len(d)} | {np.mean(d):.4f} | {np.mean(t):.1f} | "
                      f"{np.median([r['seconds'] for r in sel]):.2f} |")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", type=Path, required=True, help="a CV fold's model folder")
    ap.add_argument("--planes", nargs="+", default=["coverage", "fov", "axial"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=RESULTS / "isotropic_slabs.jsonl")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    machine = f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
    cases = {c.case_id: c for c in chaos_cases(DATA / "chaos_t2", MR_KIDNEYS)}
    new = []
    with open(args.out, "a") as f:
        for folder in args.model:
            base = MRKidneyPipeline.load(str(folder), "cpu", "mr-multiprotocol-unet")
            pipes = {pl: with_planes(base, pl) for pl in args.planes}
            for cid in held_out_cases(folder):
                image, labels = isotropic_case(cases[cid])
                for slab, (img, lab) in slabs(image, labels).items():
                    for pl, pipe in pipes.items():
                        t0 = time.perf_counter()
                        result = run(pipe, pl, img)
                        row = {"model": folder.name, "case": cid, "slab": slab, "planes": pl, "shape": list(img.shape),
                               "seconds": round(time.perf_counter() - t0, 2), "tag": args.tag, "date": when,
                               "machine": machine, **score(np.asarray(result.mask.array), lab),
                               **{k: result.qc[k] for k in QC_FIELDS if k in result.qc}}
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                        new.append(row)
                        print(json.dumps(row), flush=True)
    md = ["# Near-isotropic slabs (stand-in: CHAOS resampled to 3 mm isotropic)", "",
          f"Written by `benchmarks/isotropic_slabs.py` ({when}, {machine}); models: "
          + ", ".join(f"`{m.name}`" for m in args.model) + ". Each case scored by the fold model that held it out. "
          "Rule: benchmarks/README.md, \"Near-isotropic slabs\".", ""] + summarise(new)
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
