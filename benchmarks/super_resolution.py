"""Through-plane super-resolution against cubic-spline interpolation on held-out slices
(issue 5, item 5; seed 000 section II.E).

    python benchmarks/super_resolution.py [--cases 1 2 5 8] [--factors 3 5] [--steps 600]
                                          [--out benchmarks/results/super_resolution.md]

Protocol, per volume and factor f (odd, so the kept slices sit at the centre of their group):
keep one slice in f (:func:`kidneyseg.preprocess.super_resolution.decimate`), super-resolve
the kept slices by f, and score the f - 1 slices of every group that were held out against
the originals (PSNR in dB over the held-out slices with the reference's data range, SSIM
mean over them; scikit-image). The network is trained on the in-plane slices of the
*decimated* volume only (self-supervised, nothing else seen), as
:class:`~kidneyseg.preprocess.super_resolution.ThroughPlaneSR` does in the pipeline.

Data: CHAOS T2 (../shared/data/chaos_t2, CC BY-SA 4.0; 1.25 x 1.25 x 7.7 mm) and the ukat GE
gradient-echo scan ge_01 (ukat, GPL-3.0; 1.56 x 1.56 x 5 mm, coronal).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.io import read_image  # noqa: E402
from kidneyseg.specs.em_unet import prepare  # noqa: E402
from kidneyseg.preprocess.super_resolution import (SRConfig, ThroughPlaneSR, cubic_upsample, decimate,  # noqa: E402
                                                   psnr_ssim)

DATA = ROOT.parent / "shared" / "data"


def held_out(volume: np.ndarray, factor: int, sr_steps: int) -> dict:
    n = (volume.shape[2] // factor) * factor
    v = volume[..., :n]
    low = decimate(v, factor, 2)
    idx = [i for i in range(n) if i % factor != factor // 2]
    ref = np.moveaxis(v[..., idx], 2, 0)
    cubic = cubic_upsample(low, factor, 2)
    t0 = time.perf_counter()
    sr = ThroughPlaneSR.train([low], [2], SRConfig(factor=factor, steps=sr_steps))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = sr.apply(low, 2)
    apply_s = time.perf_counter() - t0
    c = psnr_ssim(ref, np.moveaxis(cubic[..., idx], 2, 0))
    s = psnr_ssim(ref, np.moveaxis(out[..., idx], 2, 0))
    return {"slices": n, "kept": low.shape[2], "cubic_psnr": c[0], "cubic_ssim": c[1], "sr_psnr": s[0],
            "sr_ssim": s[1], "train_s": train_s, "apply_s": apply_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["1", "2", "5", "8"])
    ap.add_argument("--factors", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "super_resolution.md"))
    args = ap.parse_args()
    vols = {f"chaos_{c}": prepare(read_image(DATA / "chaos_t2" / f"image_{c}.nii.gz", dtype=np.float32)).array
            for c in args.cases}
    ge = next((DATA / "ukat_kidney_masks" / "ge_01").glob("*_e1.nii.gz"))
    vols["ukat_ge_01"] = prepare(read_image(ge, dtype=np.float32)).array
    rows = []
    for name, vol in vols.items():
        for f in args.factors:
            if vol.shape[2] // f < 4:
                continue
            r = {"volume": name, "factor": f, **held_out(vol, f, args.steps)}
            rows.append(r)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    out = Path(args.out)
    lines = ["# Through-plane super-resolution vs cubic spline on held-out slices (benchmarks/super_resolution.py)", "",
             f"Run {dt.date.today().isoformat()}, CPU only. SR network: {SRConfig().layers} convolutions, "
             f"{SRConfig().features} features, {args.steps} Adam steps on the decimated volume's own in-plane slices.",
             "", "| volume | factor | slices (kept) | cubic PSNR dB | SR PSNR dB | cubic SSIM | SR SSIM | SR train s | SR apply s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['volume']} | {r['factor']} | {r['slices']} ({r['kept']}) | {r['cubic_psnr']:.2f} | "
                     f"{r['sr_psnr']:.2f} | {r['cubic_ssim']:.4f} | {r['sr_ssim']:.4f} | {r['train_s']:.0f} | "
                     f"{r['apply_s']:.1f} |")
    for f in args.factors:
        rs = [r for r in rows if r["factor"] == f]
        if rs:
            lines.append(f"\nFactor {f}: mean PSNR gain {np.mean([r['sr_psnr'] - r['cubic_psnr'] for r in rs]):+.3f} dB, "
                         f"mean SSIM gain {np.mean([r['sr_ssim'] - r['cubic_ssim'] for r in rs]):+.4f} "
                         f"over {len(rs)} volumes.")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
