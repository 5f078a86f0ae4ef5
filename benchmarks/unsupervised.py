"""Unsupervised kidney segmentation (seed 001) against Otsu and watershed, on real expert masks.

    python benchmarks/unsupervised.py [--methods cluster3d cluster2d otsu watershed] [--cases ...] [--precision float32]
    python benchmarks/unsupervised.py --ablation      # lambda and (N, p) on the development cases

Data:
* ../shared/data/chaos_t2: the 15 CHAOS T2-SPIR cases (CC-BY-SA 4.0), expert labels 2 right and
  3 left kidney. Cases 1, 2 and 5 were used to develop the ROI and cluster-selection settings
  (the paper also used 3 development patients); the summary is given for all 15 and for the
  12 others.
* ../shared/data/ukat_kidney_masks: ge_01, philips_01, siemens_01 (GPL-3.0), coronal gradient-echo
  magnitude, masks roi-R / roi-L.

No method sees a label. Rows are per kidney (right and left scored separately, as the paper
scores its one kidney): DSC, HD95, PKVD, precision and recall (kidneyseg.metrics), and seconds
per volume (the whole pipeline: N4, ROI, both kidneys). Results are appended to a JSONL file as
they finish, so an interrupted run resumes; the Markdown table is written at the end.
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

from kidneyseg.io import read_image  # noqa: E402
from kidneyseg.metrics import MR_KIDNEY_REGIONS, evaluate_labels  # noqa: E402
from kidneyseg.pipelines.unsupervised import METHODS, UnsupervisedConfig, UnsupervisedKidneyPipeline  # noqa: E402
from kidneyseg.training.clustering import PRECISIONS, ClusterConfig  # noqa: E402

CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"
UKAT = ROOT.parent / "shared" / "data" / "ukat_kidney_masks"
DEV = ("chaos_1", "chaos_2", "chaos_5")
COLUMNS = (("dice", "DSC (%)", 100), ("hd95_mm", "HD95 (mm)", 1), ("pkvd", "PKVD (%)", 1),
           ("precision", "Precision (%)", 100), ("recall", "Recall (%)", 100))


def cases() -> dict[str, tuple[Path, object]]:
    out = {}
    for p in sorted(CHAOS.glob("image_*.nii.gz"), key=lambda p: int(p.name[6:-7])):
        n = p.name[6:-7]
        out[f"chaos_{n}"] = (p, CHAOS / f"label_{n}.nii.gz")
    for scan in ("ge_01", "philips_01", "siemens_01"):
        img = next((UKAT / scan).glob("*_e1.nii.gz"), None)
        if img is not None:
            stem = img.name[: -len(".nii.gz")]
            out[f"ukat_{scan}"] = (img, (UKAT / scan / f"{stem}_roi-R.nii.gz", UKAT / scan / f"{stem}_roi-L.nii.gz"))
    return out


def reference(ref, shape) -> np.ndarray:
    if isinstance(ref, tuple):
        out = np.zeros(shape, np.uint8)
        out[read_image(ref[0]).array > 0] = 1
        out[read_image(ref[1]).array > 0] = 2
        return out
    lab = np.asarray(read_image(ref).array).astype(np.int16)
    out = np.zeros(shape, np.uint8)
    out[lab == 2] = 1  # CHAOS: 2 right kidney, 3 left kidney
    out[lab == 3] = 2
    return out


def run_one(case: str, paths, config: UnsupervisedConfig, tag: str) -> list[dict]:
    image = read_image(paths[0], dtype=np.float32)
    ref = reference(paths[1], image.shape)
    pipe = UnsupervisedKidneyPipeline(config, device="cpu")
    t0 = time.perf_counter()
    result = pipe.segment(image)
    seconds = time.perf_counter() - t0
    rows = evaluate_labels(result.mask.array, ref, image.spacing_mm, MR_KIDNEY_REGIONS[:2],
                           voxel_volume_ml=image.voxel_volume_ml)
    out = []
    for r in rows:
        out.append({"tag": tag, "case": case, "region": r["region"], "seconds": round(seconds, 2),
                    "no_roi": result.qc["no_roi"], "not_converged": result.qc["not_converged"],
                    **{k: (None if not np.isfinite(r[k]) else float(r[k])) for k, _, _ in COLUMNS},
                    "volume_pred_ml": float(r["volume_pred_ml"]), "volume_ref_ml": float(r["volume_ref_ml"]),
                    "iterations": result.qc.get(f"iterations_{r['region'].split('_')[1]}")})
    return out


def stats(rows, key, scale):
    vals = [r[key] for r in rows]
    finite = [v * scale for v in vals if v is not None]
    n_inf = len(vals) - len(finite)
    if not finite:
        return f"inf ({n_inf} inf)" if n_inf else "n/a"
    s = f"{np.mean(finite):.2f} ± {np.std(finite):.2f}"
    return s + (f" ({n_inf} inf)" if n_inf else "")


def table(rows, tags, title) -> list[str]:
    lines = [f"### {title}", "", "| method | kidneys | " + " | ".join(c[1] for c in COLUMNS) + " | s / volume |",
             "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " | --- |"]
    for tag in tags:
        sel = [r for r in rows if r["tag"] == tag]
        if not sel:
            continue
        secs = {r["case"]: r["seconds"] for r in sel}
        lines.append(f"| {tag} | {len(sel)} | " + " | ".join(stats(sel, k, s) for k, _, s in COLUMNS)
                     + f" | {np.mean(list(secs.values())):.1f} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--cases", nargs="*", default=None, help="case ids (default: all)")
    ap.add_argument("--ablation", action="store_true", help="lambda and (N, p) on the development cases")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS, help="ClusterConfig.precision of the clustering methods")
    ap.add_argument("--results", type=Path, default=None, help="JSONL of finished rows (resumed)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name = "unsupervised_ablation" if args.ablation else "unsupervised"
    results = args.results or ROOT / "benchmarks" / "results" / f"{name}.jsonl"
    out = args.out or ROOT / "benchmarks" / "results" / f"{name}.md"
    all_cases = cases()
    if args.ablation:
        chosen = {c: all_cases[c] for c in DEV}
        base = ClusterConfig()
        configs = {f"lambda={lam:g} (N,p)=(2,50)": UnsupervisedConfig(cluster=replace(base, continuity_weight=lam))
                   for lam in (1.0, 5.0, 10.0)}
        for n, p in ((1, 50), (3, 50), (2, 20), (2, 100)):
            configs[f"lambda=5 (N,p)=({n},{p})"] = UnsupervisedConfig(cluster=replace(base, n_blocks=n, channels=p))
    else:
        unknown = sorted(set(args.cases or ()) - set(all_cases))
        if unknown:
            sys.exit(f"unsupervised.py: no such case {', '.join(unknown)} (have: {', '.join(all_cases) or 'none'})")
        chosen = {c: all_cases[c] for c in (args.cases or all_cases)}
        configs = {m: UnsupervisedConfig(method=m, cluster=ClusterConfig(precision=args.precision)) for m in args.methods}
    if not chosen:
        sys.exit(f"unsupervised.py: no cases found in {CHAOS} or {UKAT}")
    done = set()
    rows: list[dict] = []
    if results.exists():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            rows.append(r)
            done.add((r["tag"], r["case"]))
    for tag, config in configs.items():
        for case, paths in chosen.items():
            if (tag, case) in done:
                continue
            new = run_one(case, paths, config, tag)
            with results.open("a") as fh:
                for r in new:
                    fh.write(json.dumps(r) + "\n")
            rows += new
            print(tag, case, " ".join(f"{r['region']} dice {r['dice']:.3f}" for r in new), f"{new[0]['seconds']:.0f} s",
                  flush=True)
    tags = list(configs)
    rows = [r for r in rows if r["case"] in chosen and r["tag"] in configs]
    lines = [f"# Unsupervised kidney segmentation{' ablation' if args.ablation else ''} (seed 001)", "",
             f"Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `benchmarks/unsupervised.py"
             f"{' --ablation' if args.ablation else ''}`; machine: {platform.processor() or platform.machine()}, "
             "2 CPU cores, torch threads default; seconds are per volume (N4 + ROI + both kidneys).", "",
             "Per kidney: mean ± std. HD95 is infinite when a kidney is missed; those are counted, not averaged.", ""]
    chaos = [r for r in rows if r["case"].startswith("chaos")]
    lines += table(chaos, tags, f"CHAOS T2-SPIR, all {len({r['case'] for r in chaos})} cases")
    if not args.ablation:
        lines += table([r for r in chaos if r["case"] not in DEV], tags, "CHAOS, the 12 cases not used for development")
        lines += table([r for r in rows if r["case"].startswith("ukat")], tags, "ukat gradient echo (ge_01, philips_01, siemens_01)")
    lines += ["### Per case", "", "| method | case | region | DSC | HD95 (mm) | volume pred / ref (mL) | s | flags |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        flags = ",".join(f for f in ("no_roi", "not_converged") if r[f])
        hd = "inf" if r["hd95_mm"] is None else f"{r['hd95_mm']:.1f}"
        lines.append(f"| {r['tag']} | {r['case']} | {r['region']} | {r['dice']:.3f} | {hd} | "
                     f"{r['volume_pred_ml']:.0f} / {r['volume_ref_ml']:.0f} | {r['seconds']:.0f} | {flags} |")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:40]))


if __name__ == "__main__":
    main()
