"""Benchmark of the MR kidney model: cross-validated accuracy, volume error, speed, memory.

    python benchmarks/mr_kidney.py --folds runs/fold0 runs/fold1 ... [--model DIR]
    python benchmarks/mr_kidney.py --train runs/mr_t2   # retrain CV + final first (6 trainings of 4000 iterations: about 28 min each on 1 thread)

Reports, as a Markdown table printed and written to benchmarks/results/mr_kidney.md:
  * cross-validated Dice per kidney and total-kidney-volume error (pooled held-out cases);
  * Dice of the shipped model on the held-out bundled case (CHAOS 39);
  * wall seconds of `kidneyseg segment` per case, load to write, in one process after the model is
    loaded (and the whole command, interpreter start included, for one case);
  * peak resident memory of the `kidneyseg segment` process;
  * training time of the final model.
Needs ../shared/data/chaos_t2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.api import example_dir, segment_files  # noqa: E402
from kidneyseg.inference import read_inference_config  # noqa: E402
from kidneyseg.io import read_image  # noqa: E402
from kidneyseg.metrics import dice  # noqa: E402
from kidneyseg.models.store import default_model_dir  # noqa: E402
from kidneyseg.training.trainer import summarise_cv  # noqa: E402

CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", nargs="*", type=Path, default=[])
    ap.add_argument("--train", type=Path, default=None, help="train CV folds + final model into this folder first")
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: shipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mr_kidney.md")
    args = ap.parse_args()
    if not CHAOS.is_dir():
        sys.exit(f"benchmark needs {CHAOS}")
    torch.set_num_threads(args.threads)

    folds = list(args.folds)
    model = args.model
    if args.train is not None:
        from kidneyseg.api import train_model
        from kidneyseg.specs.mr_unet import TrainConfig

        cfg = TrainConfig(dataset=str(CHAOS), exclude_cases=("39",), num_threads=args.threads, device="cpu")
        train_model(cfg, args.train, folds="cv")
        folds = [args.train / f"fold_{k}" for k in range(cfg.folds)]
        model = args.train
    model_dir = model or default_model_dir()
    lines = [f"# MR kidney benchmark ({dt.date.today().isoformat()})", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{args.threads} threads, CPU only. Data: CHAOS T2-SPIR (`../shared/data/chaos_t2`).", ""]

    if folds:
        cv = summarise_cv(folds, Path(tempfile.mkdtemp()) / "cv.json")
        dr, dl, ve = cv["dice_kidney_right"], cv["dice_kidney_left"], cv["total_volume_error_pct"]
        lines += [f"## Cross-validation ({len(folds)} folds by patient, {cv['n_cases']} held-out cases)", "",
                  "| metric | right kidney | left kidney |", "| --- | --- | --- |",
                  f"| Dice mean +- std | {dr['mean']:.3f} +- {dr['std']:.3f} | {dl['mean']:.3f} +- {dl['std']:.3f} |",
                  f"| Dice median | {dr['median']:.3f} | {dl['median']:.3f} |",
                  f"| Dice min | {dr['min']:.3f} | {dl['min']:.3f} |", "",
                  f"Total kidney volume error vs expert: mean |error| {ve['mean_abs']:.1f} %, "
                  f"mean signed {ve['mean_signed']:+.1f} %, worst {ve['max_abs']:.1f} %.", "",
                  "These are the trainer's validation figures: one network pass and the argmax.", ""]
    inf = read_inference_config(model or default_model_dir())
    lines += ["## Inference settings of the model", "",
              f"Test-time shifts {list(inf.tta_shifts_px)} px{', mirrored too' if inf.tta_mirror_x else ''}; "
              f"decision {'argmax' if inf.kidney_threshold is None else f'kidney probability >= {inf.kidney_threshold}'}. "
              f"{(inf.chosen_by + '.') if inf.chosen_by else 'No inference.json: defaults.'} The speed and case-39 figures below use these settings.", ""]

    # speed: every CHAOS case through segment_files in one process, model loaded once
    images = sorted(CHAOS.glob("image_*.nii.gz"))
    with tempfile.TemporaryDirectory() as tmp:
        segment_files(images[:1], Path(tmp) / "warm", model=str(model) if model else None, device="cpu",
                      progress=False)
        per_case = []
        for img in images:
            t = time.perf_counter()
            segment_files([img], Path(tmp) / img.name, model=str(model) if model else None, device="cpu",
                          progress=False)
            per_case.append(time.perf_counter() - t)
        # whole command as a user runs it, in a child process: wall time and peak RSS
        ex = example_dir() / "image_39.nii.gz"
        cmd = [sys.executable, "-m", "kidneyseg.cli", "segment", str(ex), "-o", str(Path(tmp) / "cli"),
               "--device", "cpu", "--quiet", "--threads", str(args.threads)]
        if model:
            cmd += ["--model", str(model)]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        cli_secs = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        pred = np.asarray(read_image(Path(tmp) / "cli" / "image_39_seg.nii.gz").array)
    ref = np.asarray(read_image(example_dir() / "label_39_kidneys.nii.gz").array)
    d39 = {n: dice(pred == v, ref == v) for v, n in ((1, "right"), (2, "left"))}
    pc = np.array(per_case)
    lines += ["## Speed and memory", "",
              f"`segment` per case (read, predict, post-process, write mask + labels + overlay + tables), "
              f"model loaded once, {len(pc)} CHAOS volumes of 256 x 256 x 31-46: "
              f"median {np.median(pc):.2f} s, max {pc.max():.2f} s.", "",
              f"Whole command `kidneyseg segment` on the bundled case, interpreter start and model load "
              f"included: {cli_secs:.1f} s; peak resident memory {peak_mb:.0f} MB.", "",
              f"Held-out bundled case 39 (never trained on), model `{model_dir}`: Dice right {d39['right']:.3f}, "
              f"left {d39['left']:.3f}.", ""]
    summ = Path(model_dir) / "training_summary.json"
    if summ.exists():
        s = json.loads(summ.read_text())
        lines += [f"Training time of this model: {s['train_seconds'] / 60:.1f} min ({s['iterations']} iterations, "
                  f"plus {s['load_seconds']:.0f} s loading).", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
