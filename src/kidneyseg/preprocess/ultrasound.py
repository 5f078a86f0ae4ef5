"""2D B-mode ultrasound preprocessing: reading a frame, the scan sector (field of view),
aspect-preserving resizing and its exact inverse, speckle-aware intensity augmentation.

Arrays are ``(H, W)`` = (depth, lateral), ``float32`` in [0, 1] unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

COLOUR_CHROMA = 0.15
"""A pixel whose RGB channels spread by more than this fraction of full scale is a coloured
overlay (calipers, text, Doppler box), not B-mode echo."""


@dataclass(frozen=True)
class USFrame:
    """One grey-scale ultrasound frame.

    Attributes:
        array: ``float32`` ``(H, W)`` in [0, 1].
        source: the file it was read from.
        pixel_spacing_mm: ``(row, column)`` spacing in mm, or ``None`` when unknown.
        overlay: ``bool`` ``(H, W)``, pixels that held a coloured overlay (replaced by the
            median of their grey neighbourhood), or ``None`` for a grey input.
        bit_depth: bits per sample of the file (8 or 16).
    """

    array: np.ndarray
    source: Path | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    overlay: np.ndarray | None = None
    bit_depth: int = 8


def read_us_frame(path: str | Path, pixel_spacing_mm: float | tuple[float, float] | None = None) -> USFrame:
    """Read a 2D ultrasound frame (PNG, JPEG, or a single-frame DICOM file).

    * 8- and 16-bit grey images are scaled by their bit depth to [0, 1] (a 16-bit frame
      whose values use only the low bits is scaled by its own maximum instead).
    * Colour images become grey by ITU-R 601 luma; pixels with a strong colour (calipers,
      burnt-in coloured text, a Doppler box) are marked in ``overlay`` and replaced by the
      median of the grey pixels around them (:func:`scipy.ndimage.median_filter`), so a
      network never sees them. Grey burnt-in text outside the scan sector is removed by
      :func:`scan_sector`.
    * DICOM: pixel data through pydicom; the spacing from ``PixelSpacing`` or from the
      first ``SequenceOfUltrasoundRegions`` item (``PhysicalDeltaY/X``, cm -> mm) unless
      ``pixel_spacing_mm`` is given.

    Raises:
        InputError: missing or unreadable file, a multi-frame or non-2D image, a constant
            image, or a non-positive spacing.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    spacing = _spacing_arg(pixel_spacing_mm, p)
    if p.suffix.lower() in (".dcm", "") and _is_dicom(p):
        raw, dicom_spacing = _read_dicom_frame(p)
        spacing = spacing or dicom_spacing
    else:
        raw = _read_picture(p)
    bit_depth = 16 if raw.dtype in (np.uint16, np.int16, np.int32, np.uint32) or raw.max(initial=0) > 255 else 8
    overlay = None
    if raw.ndim == 3:
        rgb = raw[..., :3].astype(np.float32) / (65535.0 if bit_depth == 16 else 255.0)
        grey = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
        overlay = chroma > COLOUR_CHROMA
        if overlay.any():
            from scipy.ndimage import median_filter

            filled = median_filter(np.where(overlay, 0.0, grey), size=7)
            grey = np.where(overlay, filled, grey)
        arr = grey
    else:
        scale = 255.0 if bit_depth == 8 else (65535.0 if raw.max() > 4095 else float(raw.max()))
        arr = raw.astype(np.float32) / scale
    arr = np.clip(arr, 0.0, 1.0).astype(np.float32)
    if arr.ndim != 2:
        raise InputError(f"{p}: expected a 2D frame, got shape {arr.shape}")
    if min(arr.shape) < 32:
        raise InputError(f"{p}: image of {arr.shape[0]} x {arr.shape[1]} pixels is too small (at least 32 x 32)")
    if float(arr.max() - arr.min()) < 1e-6:
        raise InputError(f"{p}: the image is constant ({float(arr.min()):g} everywhere)")
    return USFrame(arr, p, spacing, overlay, bit_depth)


def _spacing_arg(value, p: Path) -> tuple[float, float] | None:
    if value is None:
        return None
    sp = (float(value), float(value)) if np.isscalar(value) else tuple(float(v) for v in value)
    if len(sp) != 2 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise InputError(f"--pixel-spacing-mm: expected a positive spacing in mm for {p}, got {value}")
    return sp  # type: ignore[return-value]


def _is_dicom(p: Path) -> bool:
    with open(p, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_picture(p: Path) -> np.ndarray:
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(p) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise InputError(f"{p}: expected one frame, the file holds {im.n_frames}")
            if im.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "HSV", "1"):
                im = im.convert("RGB" if im.mode not in ("LA", "1") else "L")
            return np.asarray(im)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{p}: not a readable image ({exc})") from None


def _read_dicom_frame(p: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    import pydicom

    try:
        ds = pydicom.dcmread(p)
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for broken files
        raise InputError(f"{p}: not a readable DICOM image ({exc.__class__.__name__}: {exc})") from None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{p}: a multi-frame DICOM ({ds.NumberOfFrames} frames); export one frame")
    if str(getattr(ds, "PhotometricInterpretation", "")).startswith("YBR"):
        from pydicom.pixels import convert_color_space

        arr = convert_color_space(arr, ds.PhotometricInterpretation, "RGB")
    spacing = None
    if "PixelSpacing" in ds:
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    elif "SequenceOfUltrasoundRegions" in ds and len(ds.SequenceOfUltrasoundRegions):
        r = ds.SequenceOfUltrasoundRegions[0]
        # units code 3 = cm (DICOM PS3.3 C.8.5.5.1.15)
        if getattr(r, "PhysicalUnitsXDirection", None) == 3 and getattr(r, "PhysicalUnitsYDirection", None) == 3:
            spacing = (float(r.PhysicalDeltaY) * 10.0, float(r.PhysicalDeltaX) * 10.0)
    return arr, spacing


def scan_sector(image: np.ndarray, threshold: float = 0.02, closing_px: int = 7) -> np.ndarray:
    """The scan sector (field of view) of a B-mode frame: the region holding echo.

    Pixels brighter than ``threshold`` (a fraction of full scale, after a 5 x 5 median that
    removes isolated speckle and thin text strokes), closed with a disk of radius ``closing_px``,
    the largest connected component, holes filled, then its convex hull (a linear,
    curvilinear or phased-array field of view is convex). Burnt-in text, calipers and
    labels outside the sector are separate components and are dropped.

    Args:
        image: ``float`` ``(H, W)`` in [0, 1].

    Returns:
        ``bool`` ``(H, W)``; all true when nothing is found (no sector to ignore).

    Library: scipy.ndimage (median, labelling, hole filling), scikit-image (disk closing,
    convex hull).
    """
    from scipy import ndimage as ndi
    from skimage.morphology import convex_hull_image, disk

    fg = ndi.median_filter(np.asarray(image, dtype=np.float32), size=5) > threshold
    fg = ndi.binary_closing(np.pad(fg, closing_px), disk(closing_px))[closing_px:-closing_px, closing_px:-closing_px]
    lab, n = ndi.label(fg)
    if n == 0:
        return np.ones(image.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())[1:]
    largest = lab == (int(np.argmax(sizes)) + 1)
    if largest.sum() < 0.05 * image.size:
        return np.ones(image.shape, dtype=bool)
    return convex_hull_image(ndi.binary_fill_holes(largest))


@dataclass(frozen=True)
class Letterbox:
    """An aspect-preserving resize into a fixed ``(H, W)`` canvas, and its inverse.

    The image is scaled by one factor so that it fits ``size`` and is centred; the border is
    zero. :meth:`back` maps an array on the canvas to the original pixel grid exactly
    (same shape; nearest for labels, linear for probabilities).
    """

    original_hw: tuple[int, int]
    size: tuple[int, int]

    @property
    def scale(self) -> float:
        return min(self.size[0] / self.original_hw[0], self.size[1] / self.original_hw[1])

    @property
    def inner_hw(self) -> tuple[int, int]:
        s = self.scale
        return (max(1, min(self.size[0], round(self.original_hw[0] * s))),
                max(1, min(self.size[1], round(self.original_hw[1] * s))))

    @property
    def offset(self) -> tuple[int, int]:
        h, w = self.inner_hw
        return (self.size[0] - h) // 2, (self.size[1] - w) // 2

    def forward(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """``(H0, W0)`` -> ``size``; ``order`` 0 (labels) or 1 (images). Library:
        :func:`skimage.transform.resize` (anti-aliased when shrinking images)."""
        from skimage.transform import resize

        h, w = self.inner_hw
        small = resize(array, (h, w), order=order, preserve_range=True, anti_aliasing=order > 0,
                       mode="edge").astype(array.dtype if order == 0 else np.float32)
        out = np.zeros(self.size, dtype=small.dtype)
        oy, ox = self.offset
        out[oy:oy + h, ox:ox + w] = small
        return out

    def back(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """``size`` -> ``(H0, W0)``: crop the canvas border, resize to the original grid."""
        from skimage.transform import resize

        h, w = self.inner_hw
        oy, ox = self.offset
        inner = array[oy:oy + h, ox:ox + w]
        return resize(inner, self.original_hw, order=order, preserve_range=True, anti_aliasing=False,
                      mode="edge").astype(array.dtype if order == 0 else np.float32)


def speckle_augment(image: np.ndarray, rng: np.random.Generator, sector: np.ndarray | None = None,
                    p: float = 0.5) -> np.ndarray:
    """Intensity augmentation that respects how B-mode images form (training only).

    Each with probability ``p``: multiplicative speckle (a Rayleigh field of unit mean,
    smoothed to a random grain of 0.5 to 1.5 pixels: speckle multiplies the echo, it is not
    added to it); a gain change (x 0.7 to 1.3); a gamma of 0.7 to 1.5 (log-compression
    curves differ between scanners); a smooth depth-dependent gain (time-gain compensation
    set differently). Values stay in [0, 1] and the outside of ``sector`` stays 0.

    Args:
        image: ``float32`` ``(H, W)`` in [0, 1].
        rng: the caller's seeded generator.
    """
    from scipy.ndimage import gaussian_filter

    out = image.astype(np.float32, copy=True)
    if rng.random() < p:
        field = rng.rayleigh(scale=1.0, size=out.shape).astype(np.float32)
        field = gaussian_filter(field, sigma=float(rng.uniform(0.5, 1.5)))
        field /= max(float(field.mean()), 1e-6)
        out *= 0.5 + 0.5 * field  # partial: the image already holds speckle
    if rng.random() < p:
        out *= float(rng.uniform(0.7, 1.3))
    if rng.random() < p:
        out = np.clip(out, 0, 1) ** float(rng.uniform(0.7, 1.5))
    if rng.random() < p:
        depth = np.linspace(0.0, 1.0, out.shape[0], dtype=np.float32)[:, None]
        out *= 1.0 + float(rng.uniform(-0.3, 0.3)) * (depth - 0.5)
    out = np.clip(out, 0.0, 1.0)
    if sector is not None:
        out[~sector] = 0.0
    return out.astype(np.float32)


__all__ = ["COLOUR_CHROMA", "Letterbox", "USFrame", "read_us_frame", "scan_sector", "speckle_augment"]
