"""The CT pipelines trained briefly on CPU on synthetic CT phantoms, scored on held-out
phantoms on the KiTS regions (issue 6, "what counts as proof").

    python benchmarks/ct_phantoms.py [--pipeline kits-unet3d] [--train 8] [--test 4] [--iterations 300]
                                     [--memory-gb 2] [--base-filters 16] [--spacing 1.99]
    python benchmarks/ct_phantoms.py --pipeline c2f-cascade [--iterations 600]

``kits-unet3d`` (seed 002) is planned as below; ``c2f-cascade`` (seed 004) uses its defaults
(3 x 0.7816 x 0.7816 mm, 128 / 256 x 64 / 160 inputs), ``--iterations`` per network, and is also
run on a held-out phantom with three kidneys (seed 300; a pelvic kidney), the cascade's
abnormal path. Its output has no cyst label, so reference cysts count against it in the
"masses" region.

Phantoms (:mod:`kidneyseg.datasets.ct_phantom`): training seeds 100.., test seeds 200..; the
geometry cycles through orientations IPL / RAS / LPS and spacings 1.5x1.5x3, 1.2x1.2x2 and
1.8x1.8x4 mm; one training and one test phantom have a single kidney. The plan is made from
the training fingerprint with seed 002's 1.99 mm isotropic spacing and a small memory budget
(CPU), everything else as in the pipeline's defaults. Metrics (``kidneyseg.metrics``, KiTS
regions, on each test phantom's own grid): Dice and surface Dice for kidney+masses, masses,
tumour, plus kidney volume error. Then a geometry check on a real CT grid: KiTS19 case 4's
segmentation header (64 x 512 x 512, axes (z, y, x), IPL affine, 4 x 0.98 x 0.98 mm;
``../shared/data/kits_masks``) carries a CT-like volume made from its own mask (kidney 150 HU,
tumour 80 HU, soft tissue 40 HU inside a body ellipse, air outside; no real CT image is on this
machine), which is segmented; the output must have the input's shape, affine, qform and sform.
Writes ``benchmarks/results/ct_phantoms.md``; the model is kept in ``--work`` (training resumes
there).
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
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.datasets.ct_phantom import write_kits_phantoms  # noqa: E402
from kidneyseg.datasets.layouts import kits_cases  # noqa: E402
from kidneyseg.io import read_image  # noqa: E402
from kidneyseg.metrics.evaluate import KITS_REGIONS, evaluate_labels  # noqa: E402
from kidneyseg.pipelines.c2f_cascade import C2FCascadePipeline  # noqa: E402
from kidneyseg.pipelines.kits_unet3d import KitsUNetPipeline  # noqa: E402
from kidneyseg.specs.c2f import STAGES, C2FConfig  # noqa: E402
from kidneyseg.specs.kits import KitsConfig  # noqa: E402
from kidneyseg.planning import fingerprint, make_plan  # noqa: E402
from kidneyseg.training.c2f import train_c2f_cascade  # noqa: E402
from kidneyseg.training.kits import train_kits_unet3d  # noqa: E402


def real_grid_check(pipe, work: Path) -> dict:
    """Segment a CT-like volume on KiTS19 case 4's real grid and compare output geometry."""
    import resource

    import nibabel as nib

    seg_path = ROOT.parent / "shared" / "data" / "kits_masks" / "kits19" / "case_00004" / "segmentation.nii.gz"
    if not seg_path.exists():
        return {}
    ref = nib.load(str(seg_path))
    mask = np.asarray(ref.dataobj)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in mask.shape], indexing="ij")
    rng = np.random.default_rng(0)
    ct = np.where(y ** 2 / 0.8 + x ** 2 / 0.95 < 1, 40.0, -1000.0).astype(np.float32)
    ct[mask == 1], ct[mask == 2] = 150.0, 80.0
    ct += rng.normal(0, 12, ct.shape).astype(np.float32)
    img_nii = nib.Nifti1Image(ct.astype(np.int16), ref.affine, ref.header)
    path = work / "kits19_case4_grid.nii.gz"
    nib.save(img_nii, str(path))
    img = read_image(path, dtype=np.float32)
    t0 = time.perf_counter()
    res = pipe.segment(img)
    from kidneyseg.io.writers import mask_to_nifti

    nib.save(mask_to_nifti(np.asarray(res.mask.array), img), str(work / "kits19_case4_grid_seg.nii.gz"))
    out = nib.load(str(work / "kits19_case4_grid_seg.nii.gz"))  # as written to disk
    src = nib.load(str(path))
    return {"input shape": src.shape, "output shape": out.shape,
            "affine equal": bool(np.array_equal(out.affine, src.affine)),
            "qform equal": bool(np.allclose(out.get_qform(), src.get_qform())),
            "sform equal": bool(np.allclose(out.get_sform(), src.get_sform())),
            "axis codes": "".join(nib.aff2axcodes(out.affine)),
            "kidney+masses Dice vs its mask": round(float(2 * ((res.mask.array > 0) & (mask > 0)).sum()
                                                          / max((res.mask.array > 0).sum() + (mask > 0).sum(), 1)), 3),
            "seconds": round(time.perf_counter() - t0, 1),
            "peak RSS GB (whole benchmark)": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="kits-unet3d", choices=["kits-unet3d", "c2f-cascade"])
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--test", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--memory-gb", type=float, default=2.0)
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--spacing", type=float, default=1.99)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stage-iterations", nargs="*", default=[], metavar="STAGE=N",
                    help="c2f-cascade: per-network iterations, e.g. fine=3000 tumour3d=3000")
    ap.add_argument("--test-seed", type=int, default=200,
                    help="first held-out phantom seed (200: folders test/, test_abnormal/ with seed 300; "
                         "another value N: test_N/ and test_abnormal_N/ with seed N + 100)")
    ap.add_argument("--model-dir", default=None, help="model folder name in --work (default model / model_c2f)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "ct_phantoms")
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/results/ct_phantoms.md (kits-unet3d), c2f_phantoms.md (c2f-cascade)")
    args = ap.parse_args()
    c2f = args.pipeline == "c2f-cascade"
    args.out = args.out or ROOT / "benchmarks" / "results" / ("c2f_phantoms.md" if c2f else "ct_phantoms.md")

    suffix = "" if args.test_seed == 200 else f"_{args.test_seed}"
    train_dir, test_dir = args.work / "train", args.work / f"test{suffix}"
    if not train_dir.exists():
        seeds = list(range(100, 100 + args.train))
        write_kits_phantoms(train_dir, seeds[:-1])
        write_kits_phantoms(train_dir, seeds[-1:], n_kidneys=1)
    if not test_dir.exists():
        seeds = list(range(args.test_seed, args.test_seed + args.test))
        write_kits_phantoms(test_dir, seeds[:-1], orientations=("RAS", "LPS", "IPL"))
        write_kits_phantoms(test_dir, seeds[-1:], n_kidneys=1, orientations=("PIR",))
    abnormal_dir = args.work / f"test_abnormal{suffix}"
    if c2f and not abnormal_dir.exists():
        write_kits_phantoms(abnormal_dir, [args.test_seed + 100], n_kidneys=3, orientations=("LPS",))
    cases = kits_cases(train_dir)
    if c2f:
        stage_its = {k: int(v) for k, v in (a.split("=") for a in args.stage_iterations)}
        config = C2FConfig(iterations=args.iterations, stage_iterations=stage_its, num_threads=args.threads,
                           device="cpu")
        model = train_c2f_cascade(config, cases, args.work / (args.model_dir or "model_c2f"), progress=True)
        summary = json.loads((model / "training_summary.json").read_text())
        pipe = C2FCascadePipeline.load(model, "cpu")
        setting = (f"iterations per network {({s: config.iterations_of(s) for s in STAGES})}, working grid {config.spacing_mm} mm (R, A, S), "
                   f"training {summary['train_seconds'] / 60:.1f} min (+{summary['load_seconds']:.0f} s loading; "
                   + ", ".join(f"{k} {v['train_seconds'] / 60:.1f}" for k, v in summary["stages"].items()) + " min)")
    else:
        t0 = time.perf_counter()
        fp = fingerprint(cases)
        plan = make_plan(fp, args.memory_gb, target_spacing_mm=(args.spacing,) * 3, base_filters=args.base_filters)
        plan_s = time.perf_counter() - t0
        print(plan, flush=True)
        config = KitsConfig(iterations=args.iterations, num_threads=args.threads, device="cpu")
        model = train_kits_unet3d(config, cases, args.work / (args.model_dir or "model"), plan, progress=True)
        summary = json.loads((model / "training_summary.json").read_text())
        pipe = KitsUNetPipeline.load(model, "cpu")
        setting = (f"{args.iterations} iterations, plan at {args.spacing} mm isotropic for {args.memory_gb:g} GB "
                   f"(patch {plan.patch_size}, batch {plan.batch_size}, filters {plan.filters}), planning {plan_s:.1f} s, "
                   f"training {summary['train_seconds'] / 60:.1f} min (+{summary['load_seconds']:.0f} s loading), "
                   f"mean foreground share of foreground patches {summary['foreground_patch_fraction_mean']:.3f}")
    test_cases = kits_cases(test_dir) + (kits_cases(abnormal_dir) if c2f else [])
    rows = []
    for case in test_cases:
        img = read_image(case.image, dtype=np.float32)
        ref = np.asarray(read_image(case.label).array)
        res = pipe.segment(img)
        pred = np.asarray(res.mask.array)
        scores = evaluate_labels(pred, ref, img.spacing_mm, regions=KITS_REGIONS,
                                 voxel_volume_ml=float(np.prod(img.spacing_mm)) / 1000)
        row = {"case": case.case_id, "orientation": "".join(__import__("nibabel").aff2axcodes(img.affine)),
               "seconds": round(res.seconds, 1), "kidney_count": res.qc.get("kidney_count"),
               "reference_kidneys": int(ndimage.label(ref > 0, structure=np.ones((3, 3, 3)))[1])}
        if c2f:
            row.update({k: res.qc[k] for k in ("coarse_kidney_count", "abnormal", "tumour_source")})
        for s in scores:
            row[f"dice_{s['region']}"] = s["dice"]
            row[f"sdice_{s['region']}"] = s.get("surface_dice")
        vox_ml = float(np.prod(img.spacing_mm)) / 1000
        ref_km, pred_km = (ref > 0).sum() * vox_ml, (pred > 0).sum() * vox_ml
        row["kidney_and_masses_ml"] = f"{pred_km:.1f} / {ref_km:.1f}"
        rows.append(row)
        print(row, flush=True)
    geometry = real_grid_check(pipe, args.work)
    regions = [r.name for r in KITS_REGIONS]
    lines = [f"# {args.pipeline} on synthetic CT phantoms (benchmarks/ct_phantoms.py --pipeline {args.pipeline})", "",
             f"Run {dt.date.today().isoformat()} on {platform.machine()} CPU ({args.threads} torch threads; other jobs "
             f"may have shared the 2 cores, so times are upper bounds). {args.train} training / {len(test_cases)} "
             f"held-out phantoms (seeds from {args.test_seed}), {setting}.", "",
             "| region | Dice mean +- std | min | surface Dice mean |", "|---|---|---|---|"]
    for reg in regions:
        d = np.array([r[f"dice_{reg}"] for r in rows], float)
        sd = np.array([r[f"sdice_{reg}"] for r in rows], float)
        lines.append(f"| {reg} | {d.mean():.3f} +- {d.std():.3f} | {d.min():.3f} | {sd.mean():.3f} |")
    keys = (["case", "orientation", "reference_kidneys", "kidney_count"]
            + (["coarse_kidney_count", "abnormal", "tumour_source"] if c2f else [])
            + [f"dice_{r}" for r in regions] + ["kidney_and_masses_ml", "seconds"])
    lines += ["", "Per held-out phantom (kidney+masses mL predicted / reference):", "",
              "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    if geometry:
        lines += ["", "Real KiTS19 grid (case 4 header, synthetic intensities from its mask): "
                  + ", ".join(f"{k} {v}" for k, v in geometry.items())]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
