"""Synthetic 2D kidney ultrasound phantoms with known masks (for tests and
``benchmarks/us_phantoms.py``; not a substitute for real images).

Each phantom is a curvilinear-probe field of view (a convex fan, black outside) over
textured soft tissue, holding one kidney drawn as anatomists describe its sonographic
appearance: a bright capsule line with perirenal fat, a cortex slightly darker than the
liver, dark medullary pyramids in a ring, and a bright central echo complex (renal sinus
fat). Echo amplitudes are multiplied by Rayleigh-distributed speckle, smoothed to a grain
of about a pixel; depth attenuation; optional acoustic shadows (a rib or bowel gas casts a
dark band below it) that may cross the kidney; optional burnt-in text and a caliper mark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS = {1: "central_echo_complex", 2: "medulla", 3: "cortex"}  # same values as the Open Kidney US masks


@dataclass(frozen=True)
class USPhantom:
    """One phantom.

    Attributes:
        image: ``float32`` ``(H, W)`` in [0, 1], 0 outside the sector.
        capsule: ``bool`` ``(H, W)``, the kidney (inside the capsule).
        regions: ``uint8`` ``(H, W)``: 1 central echo complex, 2 medulla, 3 cortex.
        sector: ``bool`` ``(H, W)``, the field of view.
    """

    image: np.ndarray
    capsule: np.ndarray
    regions: np.ndarray
    sector: np.ndarray


def _fan(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fan mask plus per-pixel depth (0 at the skin, 1 at the bottom) and angle."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    apex_y = -rng.uniform(0.15, 0.35) * h
    apex_x = w / 2 + rng.uniform(-0.03, 0.03) * w
    r = np.hypot(yy - apex_y, xx - apex_x)
    ang = np.arctan2(xx - apex_x, yy - apex_y)
    half = np.deg2rad(rng.uniform(30, 40))
    r0, r1 = -apex_y + 0.02 * h, -apex_y + rng.uniform(0.9, 0.98) * h
    sector = (np.abs(ang) <= half) & (r >= r0) & (r <= r1)
    depth = np.clip((r - r0) / (r1 - r0), 0, 1)
    return sector, depth, ang


def _ellipse(yy, xx, cy, cx, ay, ax, theta):
    c, s = np.cos(theta), np.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / ax) ** 2 + (v / ay) ** 2


def make_phantom(rng: np.random.Generator, size_hw: tuple[int, int] = (128, 128), shadow_p: float = 0.4,
                 text_p: float = 0.3) -> USPhantom:
    """Draw one phantom.

    Args:
        rng: seeded generator (the phantom is a function of its state).
        size_hw: ``(H, W)`` in pixels.
        shadow_p: probability of an acoustic shadow band.
        text_p: probability of burnt-in text and a caliper cross outside / inside the sector.
    """
    from scipy.ndimage import gaussian_filter

    h, w = size_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sector, depth, ang = _fan(h, w, rng)

    # soft tissue: smooth texture around the liver's echo level
    tissue = 0.55 + 0.12 * gaussian_filter(rng.standard_normal((h, w)), sigma=0.08 * min(h, w))
    echo = tissue.astype(np.float32)

    # kidney: a bean = ellipse minus a hilum notch
    ax = rng.uniform(0.2, 0.3) * w
    ay = ax * rng.uniform(0.45, 0.65)
    cy = rng.uniform(0.4, 0.65) * h
    cx = w / 2 + rng.uniform(-0.12, 0.12) * w
    theta = rng.uniform(-0.5, 0.5)
    outer = _ellipse(yy, xx, cy, cx, ay, ax, theta)
    notch_side = rng.choice([-1.0, 1.0])
    ny = cy + notch_side * ay * np.cos(theta) * 1.05
    nx = cx - notch_side * ay * np.sin(theta) * 1.05
    notch = _ellipse(yy, xx, ny, nx, 0.35 * ay, 0.3 * ax, theta) <= 1
    capsule = (outer <= 1) & ~notch
    sinus = (_ellipse(yy, xx, cy, cx, 0.45 * ay, 0.62 * ax, theta) <= 1) & capsule
    # pyramids: small ellipses on a ring between sinus and cortex
    medulla = np.zeros((h, w), dtype=bool)
    for a in np.linspace(0, 2 * np.pi, int(rng.integers(5, 8)), endpoint=False) + rng.uniform(0, 1):
        py = cy + 0.68 * ay * np.sin(a) * np.cos(theta) + 0.68 * ax * np.cos(a) * np.sin(theta)
        px = cx + 0.68 * ax * np.cos(a) * np.cos(theta) - 0.68 * ay * np.sin(a) * np.sin(theta)
        medulla |= _ellipse(yy, xx, py, px, 0.16 * ay, 0.16 * ax, a) <= 1
    medulla &= capsule & ~sinus
    regions = np.zeros((h, w), dtype=np.uint8)
    regions[capsule] = 3
    regions[medulla] = 2
    regions[sinus] = 1

    rim = (outer > 1) & (outer <= 1.25) & ~notch  # capsule line + perirenal fat
    echo[rim] = rng.uniform(0.8, 0.95)
    echo[capsule] = rng.uniform(0.38, 0.48)
    echo[medulla] = rng.uniform(0.12, 0.2)
    echo[sinus] = rng.uniform(0.8, 0.95) + 0.05 * rng.standard_normal(int(sinus.sum()))
    echo = gaussian_filter(echo, sigma=0.6)

    # speckle: multiplicative, Rayleigh, unit mean, a grain of about a pixel
    speckle = gaussian_filter(rng.rayleigh(1.0, (h, w)), sigma=0.7)
    echo = echo * speckle / speckle.mean()
    # attenuation with depth and an imperfect time-gain compensation
    echo *= np.exp(-rng.uniform(0.3, 0.9) * depth)
    if rng.random() < shadow_p:  # a shadow below an obstacle at a random angle and depth
        a0 = rng.uniform(ang[sector].min(), ang[sector].max())
        width = rng.uniform(0.05, 0.12)
        start = rng.uniform(0.05, 0.5)
        shadow = (np.abs(ang - a0) < width) & (depth > start)
        echo[shadow] *= rng.uniform(0.15, 0.35)
        echo[(np.abs(ang - a0) < width) & (np.abs(depth - start) < 0.02)] = 0.95  # the obstacle's bright edge
    echo = np.clip(echo, 0, 1).astype(np.float32)
    echo[~sector] = 0.0
    if rng.random() < text_p:  # burnt-in text outside the sector and a caliper cross inside it
        echo[2:6, 3:3 + w // 5] = np.where(rng.random((4, w // 5)) > 0.5, 1.0, 0.0)
        py, px = int(cy + ay * 0.9), int(cx)
        if 2 <= py < h - 2 and 2 <= px < w - 2:
            echo[py, px - 2:px + 3] = 1.0
            echo[py - 2:py + 3, px] = 1.0
    return USPhantom(echo, capsule & sector, np.where(sector, regions, 0).astype(np.uint8), sector)


def make_phantoms(n: int, seed: int, size_hw: tuple[int, int] = (128, 128), **kwargs) -> list[USPhantom]:
    """``n`` phantoms from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return [make_phantom(rng, size_hw, **kwargs) for _ in range(n)]


__all__ = ["REGIONS", "USPhantom", "make_phantom", "make_phantoms"]
