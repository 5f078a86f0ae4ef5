"""Run reports: one self-contained ``report.html`` (pictures embedded as base64 PNG, no
network, no script) per ``segment`` or ``evaluate`` run.

For ``segment``: per case, the kidneys outlined in three planes through the kidneys' centre
(axial, coronal, sagittal, radiological convention: the patient's right on the viewer's
left, world axes from the affine), the volume table with the QC flags, and, for a cohort of
two or more finished cases, the distribution of kidney volumes. For ``evaluate``: the
summary table and the metric plots.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import Image, to_canonical  # noqa: E402
from ..labels import hex_colour  # noqa: E402

_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}.flag{color:#b00020;font-weight:600}img{max-width:100%}
h2{margin-top:32px;border-bottom:1px solid #ddd}.note{color:#555;font-size:13px}"""


def png_data_uri(fig) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def three_planes(image: Image, mask: Image, label_map: Mapping[int, str], title: str = "") -> str:
    """Axial and coronal slices through the centre of the labelled voxels (the volume's
    centre when the mask is empty) and a sagittal slice through the first label present (the
    right kidney), each label outlined; returns a PNG data URI.

    Display: canonical RAS arrays; axial and coronal panels show the patient's right on the
    left; aspect ratios follow the voxel spacing.
    """
    img_c, _ = to_canonical(image, copy=False)
    lab_c, _ = to_canonical(mask, copy=False)
    a = np.asarray(img_c.array, dtype=np.float32)
    m = np.asarray(lab_c.array)
    sx, sy, sz = img_c.spacing_mm
    fg = np.argwhere(m > 0)
    cx, cy, cz = (fg.mean(0).round().astype(int) if len(fg) else np.asarray(a.shape) // 2)
    present = [v for v in label_map if (m == v).any()]
    if present:  # the sagittal plane through the first labelled structure (the midline holds none)
        cx = int(round(np.argwhere(m == present[0])[:, 0].mean()))
    lo, hi = np.percentile(a, [1, 99.5])
    planes = [  # (2D array rows x cols, mask, aspect, name)
        (a[::-1, :, cz].T[::-1], m[::-1, :, cz].T[::-1], sy / sx, f"axial z={cz}"),
        (a[::-1, cy, :].T[::-1], m[::-1, cy, :].T[::-1], sz / sx, f"coronal y={cy}"),
        (a[cx, ::-1, :].T[::-1], m[cx, ::-1, :].T[::-1], sz / sy, f"sagittal x={cx}"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, (sl, ml, aspect, name) in zip(axes, planes):
        ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        for value, label in label_map.items():
            if (ml == value).any():
                ax.contour(ml == value, levels=[0.5], colors=[hex_colour(label)], linewidths=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return png_data_uri(fig)


def volume_distribution(rows: Sequence[Mapping]) -> str | None:
    """Strip plot of kidney volumes (mL) per side over a cohort, or ``None`` with fewer than
    two cases with volumes."""
    keys = [k for k in ("kidney_right_ml", "kidney_left_ml", "kidney_ml", "total_ml") if any(k in r for r in rows)]
    data = {k: [float(r[k]) for r in rows if r.get(k) is not None] for k in keys}
    if sum(len(v) for v in data.values()) < 2 or max((len(v) for v in data.values()), default=0) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    rng = np.random.default_rng(0)
    for i, (k, vals) in enumerate(data.items()):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(vals)), vals, s=14, alpha=0.8)
        ax.hlines(np.median(vals), i - 0.25, i + 0.25, color="k")
    ax.set_xticks(range(len(data)), [k.replace("_ml", "") for k in data], fontsize=9)
    ax.set_ylabel("volume (mL)")
    ax.set_title(f"kidney volumes, {max(len(v) for v in data.values())} cases (line: median)", fontsize=10)
    return png_data_uri(fig)


def _table(rows: Sequence[Mapping], flags: Sequence[str] = ()) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and not isinstance(r[k], (dict, list))]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cls = ' class="flag"' if c in flags and v not in (False, 0, "", None, "world_x") else ""
            cells.append(f"<td{cls}>{html.escape(str(round(v, 3) if isinstance(v, float) else v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _page(title: str, parts: list[str]) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n")


QC_FLAGS = ("empty", "touches_border", "laterality_conflict", "no_roi", "not_converged", "low_confidence",
            "volume_outside_validated_range")


def segment_report(rows: Sequence[Mapping], pictures: Mapping[str, str], failures: Sequence[tuple[str, str]] = (),
                   title: str = "kidneyseg segmentation report") -> str:
    """The HTML of a ``segment`` run.

    Args:
        rows: volume rows (``Result.row()``), one per finished case.
        pictures: case -> data URI of :func:`three_planes` (cases without one, e.g. skipped
            as already done, show their table row only).
        failures: ``(case, message)`` of failed cases.
    """
    parts = ["<h2>Volumes and quality flags</h2>", _table(rows, QC_FLAGS) if rows else "<p>No finished case.</p>",
             "<p class=\"note\">Volumes in mL from the voxel count and the affine. Flags in red need a look.</p>"]
    dist = volume_distribution(rows)
    if dist:
        parts += ["<h2>Cohort</h2>", f'<img alt="volume distribution" src="{dist}">']
    if failures:
        parts += ["<h2>Failed cases</h2>", _table([{"case": c, "error": m} for c, m in failures])]
    for r in rows:
        uri = pictures.get(str(r["case"]))
        if uri:
            parts += [f"<h2>{html.escape(str(r['case']))}</h2>", f'<img alt="{html.escape(str(r["case"]))} three planes" src="{uri}">']
    return _page(title, parts)


def evaluate_report(summary: Sequence[Mapping], plots: Mapping[str, Path], title: str = "kidneyseg evaluation report") -> str:
    """The HTML of an ``evaluate`` run: the summary table and the metric plots (PNG files,
    embedded)."""
    parts = ["<h2>Summary (per region and metric)</h2>", _table(summary)]
    for metric, path in plots.items():
        if Path(path).is_file():
            uri = "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts += [f"<h2>{html.escape(metric)}</h2>", f'<img alt="{html.escape(metric)}" src="{uri}">']
    return _page(title, parts)


__all__ = ["evaluate_report", "png_data_uri", "segment_report", "three_planes", "volume_distribution"]
