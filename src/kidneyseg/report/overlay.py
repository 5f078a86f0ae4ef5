"""Overlay montage: axial slices with the kidney outlines, radiological convention."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import Image, to_canonical  # noqa: E402

_COLOURS = {"kidney_right": "#ff3b30", "kidney_left": "#34c759", "kidney": "#ffcc00", "tumor": "#af52de", "cyst": "#0a84ff"}


def _display(slice_xy: np.ndarray) -> np.ndarray:
    """Canonical RAS slice ``(X, Y)`` -> display ``(rows, cols)``: anterior at the top and
    the patient's right on the viewer's left (radiological convention)."""
    return slice_xy[::-1, ::-1].T


def overlay_montage(image: Image, mask: Image, label_map: dict[int, str], path: str | Path,
                    max_slices: int = 12, title: str = "") -> None:
    """Write a PNG montage of axial slices with each label outlined.

    Slices are chosen evenly across the mask's superior-inferior extent (the whole volume
    when the mask is empty). Every panel is marked R and L (patient's sides, taken from the
    affine, not the array order) and shows its slice's world z in mm.

    Args:
        image: the input image (any orientation).
        mask: labels on the same grid.
        label_map: value -> name, used for colours and the legend.
        path: output ``.png`` (written as given; callers stage it for atomicity).
        max_slices: panels at most.
        title: figure title.
    """
    img_c, _ = to_canonical(image, copy=False)  # read-only views, no copies of a large volume
    msk_c, _ = to_canonical(mask, copy=False)
    vol, lab = np.asarray(img_c.array, dtype=np.float32), np.asarray(msk_c.array)
    zs = np.flatnonzero(lab.any(axis=(0, 1)))
    lo, hi = (zs[0], zs[-1]) if zs.size else (0, vol.shape[2] - 1)
    n = min(max_slices, hi - lo + 1)
    slices = np.unique(np.linspace(lo, hi, n).round().astype(int))
    cols = min(4, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    sx, sy, _ = img_c.spacing_mm
    vmin, vmax = np.percentile(vol[:, :, slices], [1, 99.5])  # the displayed slices only
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows * (vol.shape[1] * sy) / (vol.shape[0] * sx) + 0.5),
                             squeeze=False, facecolor="black")
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, z in zip(axes.ravel(), slices):
        ax.imshow(_display(vol[:, :, z]), cmap="gray", vmin=vmin, vmax=vmax, aspect=sy / sx, interpolation="nearest")
        disp = _display(lab[:, :, z])
        for value, name in label_map.items():
            if (disp == value).any():
                ax.contour(disp == value, levels=[0.5], colors=[_COLOURS.get(name, "#00ffff")], linewidths=1.0)
        world_z = float((img_c.affine @ np.array([0, 0, z, 1.0]))[2])
        ax.text(0.02, 0.5, "R", color="white", transform=ax.transAxes, fontsize=10, va="center", weight="bold")
        ax.text(0.98, 0.5, "L", color="white", transform=ax.transAxes, fontsize=10, va="center", ha="right", weight="bold")
        ax.text(0.02, 0.02, f"z={world_z:.0f} mm", color="white", transform=ax.transAxes, fontsize=7)
    legend = "  ".join(f"{name}" for name in label_map.values())
    fig.suptitle(f"{title}\n{legend} (outlines: " + ", ".join(
        f"{n}={'red' if n == 'kidney_right' else 'green' if n == 'kidney_left' else _COLOURS.get(n, 'cyan')}"
        for n in label_map.values()) + ")", color="white", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100, facecolor="black", format="png")
    plt.close(fig)
