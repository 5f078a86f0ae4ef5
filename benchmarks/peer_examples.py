"""MR kidney models on the example scans two peer tools ship, against those tools' own results.

    python benchmarks/peer_examples.py [--model NAME=DIR ...] [--fast] [--threads 2] [--cache DIR]

The issue-22 checks on coronal T2 HASTE and T1-weighted scans use data that are not in
``../shared``. Two peers publish small real examples of exactly those protocols inside their
PyPI packages, with their own results beside them. This benchmark takes both packages from
PyPI (``pip download --no-deps``, pinned versions, cached in ``--cache``; nothing is copied into
this repository) and scores kidneyseg against the peers' results:

- **Renal Segmentor 2.0.0** (``renalsegmentor`` wheel, GPL-3.0; Daniel et al., "Automated renal
  segmentation in healthy and chronic kidney disease subjects using a convolutional neural
  network", MRM 2021): ``segment/data/test_data/test_sub_01`` and ``test_sub_02``, Philips PAR/REC
  coronal T2-weighted TSE (single-shot, breath-hold, SPIR fat suppression), 13 and 17 slices of
  5.5 mm, 1.46-1.5 mm in plane. Reference: the total kidney volume Renal Segmentor's own tests
  expect of its cleaned mask (``segment/tests/test_tkv.py``): 310.6836 and 226.93275 mL. Only
  the TKV is published, so the figure is a TKV difference, not Dice. The paper reports Renal
  Segmentor's TKV against manual masks as 1.2 +- 16.2 mL (mean +- SD).
- **TotalSegmentator 2.18.0** (``totalsegmentator`` sdist, Apache-2.0; Wasserthal et al.;
  D'Antonoli et al., "TotalSegmentator MRI", Radiology 2025): ``tests/reference_files/
  example_mr_sm.nii.gz``, an axial abdominal MR resampled to 3 mm isotropic (117 x 91 x 20 voxels,
  fat bright, kidneys dark: T1-weighted), and ``example_seg_mr.nii.gz``, TotalSegmentator's own
  ``total_mr`` output for it (labels 2 kidney_right, 3 kidney_left; ``map_to_binary.py``).
  Figures: Dice per kidney and volumes against that output.

Neither reference is an expert mask: they say how far kidneyseg is from the tool a user would
compare it with, on a protocol kidneyseg has no labelled scan of. Rows are appended to
``benchmarks/results/peer_examples.jsonl`` and summarised in ``peer_examples.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kidneyseg.io import read_image  # noqa: E402
from kidneyseg.labels import MR_KIDNEYS  # noqa: E402
from kidneyseg.metrics import dice  # noqa: E402
from kidneyseg.report.html import QC_FLAGS  # noqa: E402
from mr_generalisation import load_pipeline  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RENAL_SEGMENTOR = "renalsegmentor==2.0.0"
TOTALSEGMENTATOR = "totalsegmentator==2.18.0"
# The TKV (mL) Renal Segmentor 2.0.0's test_tkv.py::test_get_mask expects of its cleaned mask.
RENAL_SEGMENTOR_TKV_ML = {"test_sub_01": "310.6836", "test_sub_02": "226.93275"}
TOTALSEGMENTATOR_MR_LABELS = {"kidney_right": 2, "kidney_left": 3}  # total_mr, map_to_binary.py


def fetch(spec: str, cache: Path, sdist: bool) -> Path:
    """The package file of ``spec`` in ``cache``, downloaded from PyPI by pip if absent."""
    name, _, version = spec.partition("==")
    pattern = f"{name}-{version}.tar.gz" if sdist else f"{name}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        binary = ["--no-binary", ":all:"] if sdist else []
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", *binary, "-d", str(cache), spec],
                       check=True)
        found = sorted(cache.glob(pattern))
    if not found:
        raise SystemExit(f"{spec}: pip left no {pattern} in {cache}")
    return found[0]


def renal_segmentor_cases(cache: Path) -> list[dict]:
    """Extract the two PAR/REC subjects and check the expected TKVs are the ones in its tests."""
    wheel = fetch(RENAL_SEGMENTOR, cache, sdist=False)
    out = cache / "renalsegmentor"
    with zipfile.ZipFile(wheel) as z:
        tests = z.read("segment/tests/test_tkv.py").decode()
        for case in RENAL_SEGMENTOR_TKV_ML:
            for ext in ("PAR", "REC"):
                member = f"segment/data/test_data/{case}.{ext}"
                if not (out / member).exists():  # extracted once, as the TotalSegmentator files are
                    z.extract(member, out)
    cases = []
    for case, tkv in RENAL_SEGMENTOR_TKV_ML.items():
        if tkv not in tests:
            raise SystemExit(f"{wheel.name}: test_tkv.py no longer expects {tkv} mL for {case}")
        cases.append({"source": "Renal Segmentor 2.0.0 test data (GPL-3.0)", "case": case,
                      "protocol": "coronal T2w TSE, single-shot, SPIR, Philips",
                      "image": out / "segment" / "data" / "test_data" / f"{case}.PAR",
                      "peer_tkv_ml": float(tkv), "peer_labels": None})
    return cases


def totalsegmentator_cases(cache: Path) -> list[dict]:
    sdist = fetch(TOTALSEGMENTATOR, cache, sdist=True)
    out = cache / "totalsegmentator"
    base = f"{sdist.name[:-len('.tar.gz')]}/tests/reference_files"
    with tarfile.open(sdist) as t:
        for f in ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz"):
            if not (out / f).exists():
                member = t.getmember(f"{base}/{f}")
                member.name = f
                t.extract(member, out, filter="data")
    return [{"source": "TotalSegmentator 2.18.0 test data (Apache-2.0)", "case": "example_mr_sm",
             "protocol": "axial T1w abdomen, 3 mm isotropic, 60 mm long (kidneys partly in view)",
             "image": out / "example_mr_sm.nii.gz", "peer_labels": out / "example_seg_mr.nii.gz"}]


def score(pipe, case: dict) -> dict:
    image = read_image(case["image"])
    t0 = time.perf_counter()
    result = pipe.segment(image)
    seconds = time.perf_counter() - t0
    row = {k: (v.name if isinstance(v, Path) else v) for k, v in case.items() if k != "peer_labels"}
    row.update({"spacing_mm": [round(float(s), 3) for s in image.spacing_mm], "seconds": round(seconds, 2),
                **{("routed_model" if k == "model" else k): v for k, v in result.qc.items() if k != "removed_voxels"}})
    for name in MR_KIDNEYS.values():
        row[f"{name}_ml"] = round(float(result.volumes_ml[f"{name}_ml"]), 1)
    row["tkv_ml"] = round(row["kidney_right_ml"] + row["kidney_left_ml"], 1)
    if case.get("peer_labels") is not None:
        ref_img = read_image(case["peer_labels"])
        if not np.allclose(ref_img.affine, image.affine, atol=1e-3) or ref_img.shape[:3] != image.shape[:3]:
            raise SystemExit(f"{case['peer_labels']}: not on the image's grid")
        ref = np.asarray(ref_img.array).reshape(image.shape[:3])
        pred = np.asarray(result.mask.array)
        for v, name in MR_KIDNEYS.items():
            r = ref == TOTALSEGMENTATOR_MR_LABELS[name]
            row[f"dice_{name}"] = round(dice(pred == v, r), 4)
            row[f"peer_{name}_ml"] = round(float(r.sum() * image.voxel_volume_ml), 1)
        row["peer_tkv_ml"] = round(row["peer_kidney_right_ml"] + row["peer_kidney_left_ml"], 1)
    row["tkv_difference_ml"] = round(row["tkv_ml"] - row["peer_tkv_ml"], 1)
    row["tkv_difference_pct"] = round(100 * row["tkv_difference_ml"] / row["peer_tkv_ml"], 1)
    return row


def summarise(rows: list[dict]) -> list[str]:
    lines = ["| model | tag | case | protocol | Dice right / left vs peer | TKV mL (peer) | TKV difference | "
             "flags | uncertain_fraction | seconds |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        flags = [k for k in QC_FLAGS if r.get(k)]
        d = (f"{r['dice_kidney_right']:.3f} / {r['dice_kidney_left']:.3f}" if "dice_kidney_right" in r else "-")
        lines.append(f"| {r['model']} | {r.get('tag', '')} | {r['case']} | {r['protocol']} | {d} | "
                     f"{r['tkv_ml']:.1f} ({r['peer_tkv_ml']:.1f}) | {r['tkv_difference_ml']:+.1f} mL "
                     f"({r['tkv_difference_pct']:+.1f} %) | {', '.join(flags) or 'none'} | "
                     f"{r.get('uncertain_fraction', '-')} | {r['seconds']} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                    help="as in mr_generalisation.py; default: mr-auto=auto:shipped, mr-t2-unet=shipped, "
                         "mr-multiprotocol-unet=<shipped multiprotocol model>")
    ap.add_argument("--fast", action="store_true", help="one plain pass per network (not for mr-auto)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "peer_examples")
    ap.add_argument("--out", type=Path, default=RESULTS / "peer_examples.jsonl")
    args = ap.parse_args()
    import torch

    from kidneyseg.models.store import default_model_dir

    torch.set_num_threads(args.threads)
    models = args.model or ["mr-auto=auto:shipped", "mr-t2-unet=shipped",
                            f"mr-multiprotocol-unet={default_model_dir('mr_multiprotocol_kidney')}"]
    cases = renal_segmentor_cases(args.cache) + totalsegmentator_cases(args.cache)
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    machine = f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
    with open(args.out, "a") as f:
        for spec in models:
            name, _, folder = spec.partition("=")
            pipe = load_pipeline(folder)
            if args.fast:
                if not hasattr(pipe, "disable_tta"):
                    ap.error(f"--fast: not for {folder} (mr-auto)")
                pipe.disable_tta()
            for case in cases:
                row = {"model": name + (" --fast" if args.fast else ""), "tag": args.tag, "date": when,
                       "machine": machine, **score(pipe, case)}
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in open(args.out)]
    md = ["# MR kidney models on peers' example scans", "",
          "Written by `benchmarks/peer_examples.py` from every row of `peer_examples.jsonl` "
          f"(latest run {rows[-1]['date']}, {rows[-1]['machine']}). References are the peers' own results "
          "(Renal Segmentor's expected TKV, TotalSegmentator's `total_mr` output), not expert masks. "
          "seconds = segmentation of the loaded image with the model loaded.", ""] + summarise(rows)
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
