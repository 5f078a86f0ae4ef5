"""EM localisation on a real renal FA map (issue 5, data (a)).

    python benchmarks/ukat_dti_localisation.py [--out benchmarks/results/ukat_dti_localisation.md]

Data: ../shared/data/ukat_dti_maps (ukat, GPL-3.0): one coronal Philips renal DTI exam,
128 x 128 x 9 at 3 x 3 x 5 mm, with FA and MD maps and an intensity-threshold body mask
(not a kidney mask). There is no kidney mask for it, so the result is a picture: the EM box
drawn over the FA and MD maps, slice by slice and as the projection along the slice axis,
which a reader checks by eye (are both kidneys inside?).

Settings: the EM localiser's defaults (12 classes, k-means start, 7 EM iterations, MRF 0.05,
class ranks and component count as chosen on the DWI phantoms, 5-pixel margin). They were not
tuned on this map.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.io import read_image  # noqa: E402
from kidneyseg.localize.em import EMConfig, em_classes, localise  # noqa: E402
from kidneyseg.specs.em_unet import prepare  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ukat_dti_maps"


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ukat_dti_localisation.md"))
    args = ap.parse_args()
    fa = read_image(DATA / "diffusion_fa_map.nii.gz", dtype=np.float32)
    md = read_image(DATA / "diffusion_md_map.nii.gz", dtype=np.float32)
    prep = prepare(md, fa)  # RAS+, slice axis last; localisation on FA
    config = EMConfig()
    t0 = time.perf_counter()
    ranks = em_classes(prep.loc, None, config)
    box, vicinity = localise(prep.loc, prep.spacing_mm, config, ranks=ranks)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = prep.loc.shape[2]
    fig, axes = plt.subplots(3, n + 1, figsize=(2.0 * (n + 1), 6.4))
    rows = [("FA", prep.loc), ("MD", prep.array), ("EM kidney classes", vicinity.astype(float))]
    for r, (name, vol) in enumerate(rows):
        for k in range(n + 1):
            ax = axes[r, k]
            img = vol.max(axis=2) if k == n else vol[:, :, k]
            ax.imshow(img.T, origin="lower", cmap="gray")
            if box is not None:
                ax.add_patch(patches.Rectangle((box.lo[0] - 0.5, box.lo[1] - 0.5), box.shape[0], box.shape[1],
                                               fill=False, edgecolor="lime", linewidth=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(("projection" if k == n else f"slice {k}") if r == 0 else "", fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("EM box (green) on the ukat renal DTI maps; array x to the right, y up (RAS+ working grid)",
                 fontsize=9)
    fig.tight_layout()
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=80)
    counts = np.bincount(ranks[ranks >= 0].ravel(), minlength=config.n_classes)
    means = [float(prep.loc[ranks == k].mean()) if counts[k] else float("nan") for k in range(config.n_classes)]
    lo, hi = box.world_mm(prep.affine) if box else (None, None)
    lines = [
        "# EM localisation on the real ukat renal FA map (benchmarks/ukat_dti_localisation.py)", "",
        f"Run {dt.date.today().isoformat()}, CPU. Map {prep.loc.shape} (working grid, slice axis last), "
        f"spacing {tuple(round(s, 2) for s in prep.spacing_mm)} mm. EM + MRF + box: {seconds:.1f} s.", "",
        f"- class ranks taken as kidney: {config.class_ranks}, components kept: {config.keep_components}",
        f"- class mean FA by rank: {', '.join(f'{m:.2f}' for m in means)}",
        f"- box (voxels, working grid): {box.lo if box else None} .. {box.hi if box else None}; "
        f"{box.shape if box else None} of {prep.loc.shape}",
        f"- box corners (RAS+ mm): {np.round(lo, 1).tolist() if box else None} .. "
        f"{np.round(hi, 1).tolist() if box else None}", "",
        f"![EM box over FA and MD]({png.name})", "",
    ]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
