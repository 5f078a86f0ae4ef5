"""Speed of `kidneyseg segment` with the default pipeline (mr-auto, shipped models), measured side by side in one run.

    python benchmarks/segment_speed.py [--threads 2] [--sizes 2 5 15]

Rows (written to benchmarks/results/segment_speed.{jsonl,md}):
1. per volume with the model loaded: `kidneyseg.Segmenter` on the 15 CHAOS T2 volumes of
   ../shared/data/chaos_t2 (axial, covering the abdomen: mr-auto gives them to the multiprotocol pair), with the model's
   test-time augmentation and with one pass (`--fast`); and on the three whole-kidney coronal
   ukat scans (../shared/data/ukat_kidney_masks ge_01, philips_01, siemens_01: mr-auto sends them
   to the multiprotocol model without running the T2 model);
2. a one-case command, `kidneyseg segment image_39.nii.gz -o OUT` in a fresh process (interpreter
   start, imports, model load, segmentation and every output file): once with an empty
   traced-network cache (the first run after installing; it writes the cache), then the median
   of 3 with the cache written (every later run); and the median of 3 on the coronal ge_01;
3. cohorts of the first N CHAOS volumes, serial (`--engine local`) against `--engine ray
   --workers 2`, each a fresh process, so the figure shows the cohort size where Ray starts to pay.

Nothing is asserted: this measures. Other work on the machine inflates the figures; the
machine's load average is recorded with them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CHAOS = ROOT.parent / "shared" / "data" / "chaos_t2"
UKAT = ROOT.parent / "shared" / "data" / "ukat_kidney_masks"
RESULTS = ROOT / "benchmarks" / "results"


def chaos_images() -> list[Path]:
    files = sorted(CHAOS.glob("image_*.nii.gz"), key=lambda p: int(p.name[6:-7]))
    if not files:
        sys.exit(f"{CHAOS}: no CHAOS images (../shared/data/chaos_t2 beside the project)")
    return files


def ukat_images() -> list[Path]:
    """The whole-kidney ukat scans (ge_01, philips_01, siemens_01), by the project's ukat reader."""
    from kidneyseg.datasets.layouts import ukat_cases
    from kidneyseg.errors import InputError
    from kidneyseg.labels import MR_KIDNEYS

    try:
        return [c.image for c in ukat_cases(UKAT, MR_KIDNEYS, whole_only=True)]
    except InputError as exc:
        sys.exit(f"segment_speed: {exc}")


def timing_row(row: str, setting: str, times: list[float]) -> dict:
    return {"row": row, "setting": setting, "n": len(times), "median_s": round(statistics.median(times), 2),
            "max_s": round(max(times), 2)}


def loaded(threads: int) -> list[dict]:
    import torch

    from kidneyseg import Segmenter

    torch.set_num_threads(threads)
    rows = []
    for data, files in (("CHAOS axial T2 (multiprotocol pair, all three planes)", chaos_images()),
                        ("ukat coronal GRE (multiprotocol model)", ukat_images())):
        for fast in (False, True):
            seg = Segmenter(device="cpu", tta=not fast)
            seg(str(files[0]))  # warm-up: first-call allocations (and the lazy model load of a route)
            times = []
            for f in files:
                t0 = time.perf_counter()
                seg(str(f))
                times.append(time.perf_counter() - t0)
            rows.append(timing_row(f"per volume, model loaded: {data}",
                                   "one pass (--fast)" if fast else "model's TTA", times))
    return rows


def command(args: list[str], threads: int, env: dict | None = None) -> float:
    exe = Path(sys.executable).with_name("kidneyseg")
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), *args, "--quiet", "--threads", str(threads)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.exit(f"kidneyseg {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 15], help="cohort sizes (CHAOS volumes)")
    ap.add_argument("--out", type=Path, default=RESULTS / "segment_speed")
    args = ap.parse_args()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    import torch

    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), CPU"
    rows = loaded(args.threads)
    from kidneyseg.api import example_dir

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # an empty traced-network cache (kidneyseg.models.compiled): the first command builds the
        # network from MONAI and writes the traced copy; the next three read it
        env = {**os.environ, "KIDNEYSEG_CACHE_DIR": str(tmp / "cache")}
        example = str(example_dir() / "image_39.nii.gz")
        cold = command(["segment", example, "-o", str(tmp / "cold")], args.threads, env)
        outputs = "model's TTA, all outputs"
        rows.append(timing_row("one-case command, fresh process, first run (empty network cache)", outputs, [cold]))
        for row, image, stem in (("one-case command, fresh process", example, "one"),
                                 ("one-case command, fresh process, coronal ukat ge_01 (multiprotocol model)",
                                  str(ukat_images()[0]), "cor")):
            times = [command(["segment", image, "-o", str(tmp / f"{stem}{k}")], args.threads, env) for k in range(3)]
            rows.append(timing_row(row, outputs, times))
        files = chaos_images()
        for size in args.sizes:
            for engine in ("local", "ray"):
                out = tmp / f"c{size}_{engine}"
                extra = ["--engine", "ray", "--workers", "2"] if engine == "ray" else []
                threads = 1 if engine == "ray" else args.threads  # Ray: one thread per worker, two workers
                secs = command(["segment", *map(str, files[:size]), "-o", str(out), "--no-overlay", *extra], threads)
                rows.append({"row": f"cohort of {size}", "setting": f"--engine {engine}" + (" --workers 2" if extra else ""),
                             "n": size, "total_s": round(secs, 1), "per_case_s": round(secs / size, 2)})
                shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps({"date": when, "machine": machine, "load_avg_1min": round(load, 2), **r}) + "\n")
    lines = [f"# `kidneyseg segment` speed ({when})", "",
             f"`benchmarks/segment_speed.py`; {machine}; 1-minute load average at the end {load:.2f}. "
             "Data: the 15 CHAOS T2 volumes (256 x 256 x 31-46), the 3 whole-kidney coronal ukat scans, "
             "the bundled case 39 and ukat ge_01 for the one-case command. Pipeline: mr-auto (the default).", "",
             "| what | setting | n | median s | max s | total s | s per case |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['setting']} | {r['n']} | {r.get('median_s', '')} | {r.get('max_s', '')} | "
                     f"{r.get('total_s', '')} | {r.get('per_case_s', '')} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
