"""Speed and agreement of kidneyseg.metrics against DeepMind's surface-distance on real KiTS masks.

    python benchmarks/metrics_speed.py [--out benchmarks/results/metrics_speed.md]

Data: ../shared/data/kits_masks, the 10 cases annotated in both KiTS19 and KiTS23 (same patient,
same grid, two annotation releases: a real disagreement). Each KiTS19 mask is the "prediction",
the KiTS23 mask the reference, scored on the three KiTS regions (kidney+masses, masses, tumour)
with the KiTS23 surface-Dice tolerances.

Part 1, per case and region, both tools in the same process on the same arrays (reading the
files excluded from both): ours = kidneyseg.metrics.evaluate_labels (the full set: 15 metrics);
theirs = np.isin region masks + compute_surface_distances + robust Hausdorff 95 and 100 +
average surface distance + surface Dice + Dice. Prints both times, the ratio and the largest
absolute and relative difference of every figure both compute.

Part 2, a whole cohort through the command line: `kidneyseg evaluate` on 20 pairs (the 10 pairs
in both directions), reading, metrics, tables and plots included, with 1 and 2 worker processes;
wall seconds and peak resident memory.

Part 3, end to end side by side, one process each on the same 20 pairs: `kidneyseg evaluate
--no-plots --workers 1` against a script that does what a surface-distance user does (start
Python, read both masks with nibabel, the three regions, the figures of Part 1, a CSV).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.io import read_image  # noqa: E402
from kidneyseg.metrics import KITS_REGIONS, evaluate_labels  # noqa: E402

KITS = ROOT.parent / "shared" / "data" / "kits_masks"
CASES = [f"case_{i:05d}" for i in range(10)]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def theirs(pred_labels: np.ndarray, ref_labels: np.ndarray, spacing, regions) -> dict:
    import surface_distance as sdl

    out = {}
    for region in regions:
        p, r = np.isin(pred_labels, region.labels), np.isin(ref_labels, region.labels)
        d = sdl.compute_surface_distances(r, p, spacing)
        asd_r2p, asd_p2r = sdl.compute_average_surface_distance(d)
        out[region.name] = {
            "dice": sdl.compute_dice_coefficient(r, p), "hd95_mm": sdl.compute_robust_hausdorff(d, 95),
            "hausdorff_mm": sdl.compute_robust_hausdorff(d, 100), "asd_pred_to_ref_mm": asd_p2r,
            "asd_ref_to_pred_mm": asd_r2p, "surface_dice": sdl.compute_surface_dice_at_tolerance(d, region.tolerance_mm),
        }
    return out


def part1(lines: list[str]) -> None:
    lines += ["## Part 1: full metric set per case vs surface-distance (same process, files already read)", "",
              "| case | shape | spacing (mm) | ours (s) | surface-distance (s) | ratio |", "| --- | --- | --- | --- | --- | --- |"]
    t_ours = t_theirs = 0.0
    max_abs: dict[str, float] = {}
    max_rel: dict[str, float] = {}
    for case in CASES:
        pred = read_image(KITS / "kits19" / case / "segmentation.nii.gz")
        ref = read_image(KITS / "kits23" / case / "segmentation.nii.gz")
        sp = pred.spacing_mm
        t0 = time.perf_counter()
        rows = evaluate_labels(pred.array, ref.array, sp, KITS_REGIONS, voxel_volume_ml=pred.voxel_volume_ml)
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ref_figs = theirs(pred.array, ref.array, sp, KITS_REGIONS)
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_theirs += t2 - t1
        for row in rows:
            for k, v in ref_figs[row["region"]].items():
                a = abs(float(row[k]) - float(v))
                max_abs[k] = max(max_abs.get(k, 0.0), a)
                max_rel[k] = max(max_rel.get(k, 0.0), a / abs(float(v)) if v else a)
        lines.append(f"| {case} | {'x'.join(map(str, pred.shape))} | {', '.join(f'{s:.3g}' for s in sp)} | "
                     f"{t1 - t0:.2f} | {t2 - t1:.2f} | {(t2 - t1) / (t1 - t0):.1f}x |")
        print(lines[-1], flush=True)
    lines.append(f"| **all 10** | | | **{t_ours:.2f}** | **{t_theirs:.2f}** | **{t_theirs / t_ours:.1f}x** |")
    lines += ["", "Largest difference over the 10 cases x 3 regions, ours minus surface-distance:", "",
              "| figure | max absolute difference | max relative difference |", "| --- | --- | --- |"]
    for k in max_abs:
        lines.append(f"| {k} | {max_abs[k]:.3g} | {max_rel[k]:.3g} |")
    lines.append("")


def pair_folders(tmp: Path) -> tuple[Path, Path]:
    """``tmp/pred`` and ``tmp/ref`` with the 20 pairs as links: each case's KiTS19 mask against
    its KiTS23 mask and the other way round, under the same file name on both sides."""
    pred, ref = tmp / "pred", tmp / "ref"
    pred.mkdir()
    ref.mkdir()
    for case in CASES:
        for a, b in (("kits19", "kits23"), ("kits23", "kits19")):
            name = f"{a}_vs_{b}_{case}.nii.gz"
            os.symlink(KITS / a / case / "segmentation.nii.gz", pred / name)
            os.symlink(KITS / b / case / "segmentation.nii.gz", ref / name)
    return pred, ref


def part2(lines: list[str]) -> None:
    lines += ["## Part 2: `kidneyseg evaluate` on 20 pairs (read + 15 metrics x 3 regions + tables + plots)", "",
              "| workers | wall seconds | peak RSS of the command (MB) |", "| --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        pred, ref = pair_folders(Path(tmp))
        exe = Path(sys.executable).with_name("kidneyseg")
        for workers in (1, 2):
            out = Path(tmp) / f"eval{workers}"
            cmd = [str(exe), "evaluate", str(pred), str(ref), "-o", str(out), "--regions", "kits", "--quiet",
                   "--workers", str(workers)]
            t0 = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            subprocess.run(cmd, check=True)
            wall = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            peak_note = f"{peak / 1024:.0f}" if peak > before else f"<= {before / 1024:.0f}"
            lines.append(f"| {workers} | {wall:.1f} | {peak_note} (largest single process) |")
            print(lines[-1], flush=True)
    lines.append("")


THEIRS_SCRIPT = """
import csv, sys, warnings
from pathlib import Path
import nibabel as nib, numpy as np
import surface_distance as sdl
warnings.simplefilter("ignore")
REGIONS = {"kidney_and_masses": ((1, 2, 3), 1.0331), "masses": ((2, 3), 1.1329), "tumor": ((2,), 1.1498)}
pred_dir, ref_dir, out = map(Path, sys.argv[1:4])
rows = []
for f in sorted(pred_dir.glob("*.nii.gz")):
    p_img, r_img = nib.load(f), nib.load(ref_dir / f.name)
    p, r = np.asarray(p_img.dataobj), np.asarray(r_img.dataobj)
    sp = tuple(float(z) for z in p_img.header.get_zooms()[:3])
    for name, (labels, tol) in REGIONS.items():
        pm, rm = np.isin(p, labels), np.isin(r, labels)
        d = sdl.compute_surface_distances(rm, pm, sp)
        rows.append([f.name, name, sdl.compute_dice_coefficient(rm, pm), sdl.compute_robust_hausdorff(d, 95),
                     sdl.compute_robust_hausdorff(d, 100), *sdl.compute_average_surface_distance(d),
                     sdl.compute_surface_dice_at_tolerance(d, tol)])
with open(out, "w", newline="") as fh:
    csv.writer(fh).writerows(rows)
"""


def part3(lines: list[str]) -> None:
    lines += ["## Part 3: end to end, one process each, the same 20 pairs", "",
              "| tool | what it does | wall seconds |", "| --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        pred, ref = pair_folders(Path(tmp))
        exe = Path(sys.executable).with_name("kidneyseg")
        t0 = time.perf_counter()
        subprocess.run([str(exe), "evaluate", str(pred), str(ref), "-o", str(Path(tmp) / "ours"), "--regions", "kits",
                        "--quiet", "--no-plots", "--workers", "1"], check=True)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", THEIRS_SCRIPT, str(pred), str(ref), str(Path(tmp) / "theirs.csv")],
                       check=True)
        theirs_s = time.perf_counter() - t0
    lines += [f"| kidneyseg evaluate | read, 15 metrics x 3 regions, metrics.csv/summary.csv/metrics.json | {ours:.1f} |",
              f"| surface-distance script | read, Dice, HD95, HD, two ASDs, surface Dice x 3 regions, a CSV | {theirs_s:.1f} |",
              "", f"End to end kidneyseg is **{theirs_s / ours:.1f}x** faster (and computes more figures).", ""]
    print("\n".join(lines[-5:]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "metrics_speed.md")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--only-end-to-end", action="store_true", help="Part 3 only (appended to --out)")
    args = ap.parse_args()
    if not KITS.is_dir():
        sys.exit(f"metrics_speed: {KITS} not found")
    import scipy
    import surface_distance  # noqa: F401

    lines = ["# Metrics speed and agreement on real KiTS masks", "",
             f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
             "surface-distance 0.1 (PyPI).", ""]
    if args.only_end_to_end:
        part3(lines := [f"Part 3 run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}.", ""])
        with open(args.out, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")
        return
    part1(lines)
    if not args.skip_cli:
        part2(lines)
        part3(lines)
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
