"""Metric distribution plots for ``kidneyseg evaluate`` (violins, as in seed 000 Fig. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_UNITS = {"hausdorff_mm": "mm", "hd95_mm": "mm", "assd_mm": "mm", "asd_pred_to_ref_mm": "mm",
          "asd_ref_to_pred_mm": "mm", "pkvd": "%"}


def metric_violin(rows: Sequence[Mapping], metric: str, path: str | Path) -> None:
    """Write a PNG with one violin per region of ``metric`` over the cases, each case's
    value drawn as a dot.

    Infinite values (a structure missing from one mask) cannot be drawn; the count of
    them is written under the region's name (``n_inf``) instead of being dropped
    silently. A region with fewer than two distinct finite values is drawn as dots only.

    Args:
        rows: evaluation rows with ``region`` and ``metric`` keys.
        metric: column to plot.
        path: PNG file to write (matplotlib, Agg backend).
    """
    regions: list[str] = []
    for r in rows:
        if r["region"] not in regions:
            regions.append(r["region"])
    fig, ax = plt.subplots(figsize=(max(3.5, 1.6 * len(regions) + 1.5), 3.6))
    labels = []
    for i, region in enumerate(regions):
        vals = np.array([float(r[metric]) for r in rows if r["region"] == region])
        finite = vals[np.isfinite(vals)]
        n_inf = vals.size - finite.size
        if finite.size >= 2 and np.ptp(finite) > 0:
            parts = ax.violinplot(finite, positions=[i], widths=0.8, showmedians=True, showextrema=False)
            for body in parts["bodies"]:
                body.set_alpha(0.35)
        if finite.size:
            ax.scatter(np.full(finite.size, i), finite, s=10, color="black", zorder=3)
        labels.append(f"{region}\nn={vals.size}" + (f", n_inf={n_inf}" if n_inf else ""))
    ax.set_xticks(range(len(regions)), labels, fontsize=8)
    unit = _UNITS.get(metric)
    ax.set_ylabel(metric + (f" ({unit})" if unit else ""))
    ax.set_title(metric, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100, format="png")
    plt.close(fig)


__all__ = ["metric_violin"]
