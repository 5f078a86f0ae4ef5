"""Peak memory and time of `kidneyseg segment` on a CT-sized 512 x 512 x 600 volume.

    python benchmarks/memory.py [--keep DIR]

The volume is the bundled CHAOS example (case 39) resampled with linear interpolation to
512 x 512 x 600 voxels over the same field of view (0.625 x 0.625 x 0.40 mm), stored as int16
.nii.gz, as a thin-slice CT would be. The command runs in a fresh process; peak resident
memory is that child's ru_maxrss. Target (issue 9): under 4 GB on CPU.
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
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.api import example_dir  # noqa: E402

SHAPE = (512, 512, 600)


def make_volume(path: Path) -> tuple[float, ...]:
    src = nib.load(str(example_dir() / "image_39.nii.gz"))
    arr = np.asarray(src.dataobj, dtype=np.float32)
    factors = [n / s for n, s in zip(SHAPE, arr.shape)]
    big = ndimage.zoom(arr, factors, order=1).astype(np.int16)
    affine = src.affine.copy()
    affine[:3, :3] = src.affine[:3, :3] @ np.diag([1 / f for f in factors])
    img = nib.Nifti1Image(big, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return tuple(float(v) for v in img.header.get_zooms())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vol = Path(tmp) / "ct_sized.nii.gz"
        zooms = make_volume(vol)
        exe = Path(sys.executable).with_name("kidneyseg")
        t0 = time.perf_counter()
        proc = subprocess.run([str(exe), "segment", str(vol), "-o", str(Path(tmp) / "out"), "--quiet",
                               "--threads", str(args.threads)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        seg = nib.load(str(Path(tmp) / "out" / "ct_sized_seg.nii.gz")) if proc.returncode == 0 else None
    lines = [
        "# Memory of `kidneyseg segment` on a 512 x 512 x 600 volume", "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, --threads {args.threads}.", "",
        f"- input: 512 x 512 x 600 int16 .nii.gz, spacing {tuple(round(z, 3) for z in zooms)} mm (CHAOS 39 resampled)",
        f"- exit status: {proc.returncode}" + (f" ({proc.stderr.strip()})" if proc.returncode else ""),
        f"- wall time, whole command: {wall:.1f} s",
        f"- peak resident memory of the command: {peak_mb:.0f} MB",
        f"- output mask shape: {None if seg is None else seg.shape}",
    ]
    text = "\n".join(lines) + "\n"
    out = ROOT / "benchmarks" / "results" / "memory.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
