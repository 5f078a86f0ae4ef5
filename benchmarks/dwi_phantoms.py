"""The diffusion pipeline end to end on synthetic renal DWI phantoms (issue 5, data (b)).

    python benchmarks/dwi_phantoms.py [--train 8] [--test 4] [--epochs 30] [--work runs/dwi_phantoms]
                                      [--out benchmarks/results/dwi_phantoms.md]

Phantoms: :func:`kidneyseg.datasets.dwi_phantom.make_dwi_phantom` (dipy signal simulation, 12
directions at b = 600 s/mm^2 plus b = 0, Rician noise at SNR 25, 96 x 80 x 20 voxels at
3 x 3 x 6 mm), seeds 100.. for training and 200.. for testing. Each phantom goes through the
tensor fit (dipy, WLS); the network input is MD and the localiser runs on FA, as in seed 000.
Reported per test phantom: box recall (fraction of kidney voxels inside the EM box), Dice per
side, DSC / VD / PPV on both kidneys, for ``em`` (the proposed crop) and ``none`` (whole field of
view), same network, augmentation and epochs.
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

from kidneyseg.datasets.dwi_phantom import make_dwi_phantom  # noqa: E402
from kidneyseg.diffusion import fit_tensor  # noqa: E402
from kidneyseg.io import Image  # noqa: E402
from kidneyseg.localize.em import box_recall, localise  # noqa: E402
from kidneyseg.pipelines.em_unet3d import EMUNetPipeline  # noqa: E402
from kidneyseg.specs.em_unet import EMUNetConfig, prepare  # noqa: E402
from kidneyseg.training.em_unet import TrainCase, train_em_unet  # noqa: E402


def phantom_case(seed: int) -> tuple[TrainCase, np.ndarray]:
    p = make_dwi_phantom(seed=seed)
    m = fit_tensor(p.dwi)
    return TrainCase(str(seed), Image(m.md, p.dwi.affine), p.kidneys > 0, Image(m.fa, p.dwi.affine)), p.kidneys


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--test", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--work", default=str(ROOT / "runs" / "dwi_phantoms"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dwi_phantoms.md"))
    args = ap.parse_args()
    work = Path(args.work)
    train = [phantom_case(100 + i)[0] for i in range(args.train)]
    test = [phantom_case(200 + i) for i in range(args.test)]
    rows, info = [], {}
    for variant in ("em", "none"):
        cfg = EMUNetConfig(localiser=variant, epochs=args.epochs, input_kind="MD", num_threads=2)
        t0 = time.perf_counter()
        model = train_em_unet(train, cfg, work / variant, device="cpu", progress=False)
        info[variant] = {"train_seconds": round(time.perf_counter() - t0, 1),
                         **json.loads((model / "training_summary.json").read_text())}
        pipe = EMUNetPipeline.load(model, "cpu")
        for case, truth in test:
            res = pipe.segment(case.image, case.localisation)
            pred = res.mask.array
            row = {"variant": variant, "phantom": case.case_id, "seconds": round(res.seconds, 2)}
            if variant == "em":
                prep = prepare(case.image, case.localisation)
                box, vicinity = localise(prep.loc, prep.spacing_mm, pipe.config.em)
                _, ref = _working_mask(case)
                row["box_recall"] = round(box_recall(box, ref), 3)
                row["em_alone_dsc"] = round(dice(vicinity, ref), 3)
            row.update({"dice_right": round(dice(pred == 1, truth == 1), 3), "dice_left": round(dice(pred == 2, truth == 2), 3)})
            p, r = pred > 0, truth > 0
            row.update({"dsc": round(dice(p, r), 3), "vd": round(abs(int(p.sum()) - int(r.sum())) / r.sum(), 3),
                        "ppv": round(np.count_nonzero(p & r) / max(p.sum(), 1), 3)})
            rows.append(row)
            print(row, flush=True)
    out = Path(args.out)
    lines = ["# em-unet3d on synthetic renal DWI phantoms (benchmarks/dwi_phantoms.py)", "",
             f"Run {dt.date.today().isoformat()}, CPU only (2 threads). {args.train} training and {args.test} test "
             f"phantoms, {args.epochs} epochs, MD input, FA localiser.", ""]
    for variant in ("em", "none"):
        rs = [r for r in rows if r["variant"] == variant]
        fit = info[variant].get("localiser_fit", {})
        lines.append(f"- **{variant}**: DSC {np.mean([r['dsc'] for r in rs]):.3f} +- {np.std([r['dsc'] for r in rs]):.3f}, "
                     f"Dice right {np.mean([r['dice_right'] for r in rs]):.3f}, left "
                     f"{np.mean([r['dice_left'] for r in rs]):.3f}, VD {np.mean([r['vd'] for r in rs]):.3f}, "
                     f"PPV {np.mean([r['ppv'] for r in rs]):.3f}; training {info[variant]['train_seconds']:.0f} s"
                     + (f"; EM classes chosen on the training phantoms: {fit}" if fit else ""))
    keys = ["variant", "phantom", "box_recall", "em_alone_dsc", "dice_right", "dice_left", "dsc", "vd", "ppv", "seconds"]
    lines += ["", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(str(r.get(k, "-")) for k in keys) + " |" for r in rows]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def _working_mask(case: TrainCase):
    from kidneyseg.training.em_unet import _prepare_case

    return _prepare_case(case)


if __name__ == "__main__":
    main()
