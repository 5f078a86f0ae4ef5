"""Slice-wise (2.5D) prediction on the canonical grid and mapping back to the input grid.

The same :func:`prepare` is used by training, so a model sees identical preprocessing at
training and inference time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io import Image, Reorientation, acquisition_axes, to_canonical
from ..io.orientation import covers_planes, extents_mm, wide_planes
from ..preprocess import resize_slice_axis, resize_slices, zscore_percentile
from ..preprocess.normalise import body_ratio, clip_body_ratio, gamma_zscore
from .settings import NO_TTA, InferenceConfig, TestTimeAugmentation


@dataclass
class Prepared:
    """A volume ready for the network.

    Attributes:
        volume: float32 ``(X', Y', Z)`` on the canonical RAS grid, normalised as the model
            was (:func:`prepare`), resampled in-plane to the model's spacing.
        canonical: the canonical (RAS) image before resampling, original intensities.
        reorientation: how to go back to the input's axes.
        planes: the canonical axes whose planes a 2D multiplane network was applied in and
            averaged (:func:`planes_used`); ``()`` for every other prediction.
    """

    volume: np.ndarray
    canonical: Image
    reorientation: Reorientation
    planes: tuple[int, ...] = ()


MIN_FOV_MM = 32.0
"""Smallest in-plane field of view (mm) accepted: a kidney is longer than this."""
MAX_SLICE_PX = 1024
"""Largest resampled in-plane size (pixels per side): 1.28 m at 1.25 mm, more than any body."""


def plane_size(image: Image, canonical: Image, axis: int, target_spacing_mm: float, where: str) -> tuple[int, int]:
    """In-plane size (pixels) of the slices across canonical ``axis`` resampled to
    ``target_spacing_mm``: ``round(n * spacing / target)`` per in-plane axis.

    Raises:
        InputError: an in-plane field of view under :data:`MIN_FOV_MM` (too small to hold a
            kidney) or a slice larger than :data:`MAX_SLICE_PX` pixels per side (implausible
            spacing, e.g. metres), named by ``image.source``; ``where`` names the plane.
    """
    u, v = [a for a in range(3) if a != axis]
    extent = extents_mm(canonical)
    fov = (extent[u], extent[v])
    size = (max(1, round(fov[0] / target_spacing_mm)), max(1, round(fov[1] / target_spacing_mm)))
    src = image.source if image.source is not None else "image"
    spacing = tuple(round(s, 4) for s in image.spacing_mm)
    if min(fov) < MIN_FOV_MM:
        raise InputError(f"{src}: {where} field of view {fov[0]:.0f} x {fov[1]:.0f} mm is too small to hold a kidney "
                         f"(need >= {MIN_FOV_MM:.0f} mm; spacing_mm {spacing})")
    if max(size) > MAX_SLICE_PX:
        raise InputError(f"{src}: {where} field of view {fov[0]:.0f} x {fov[1]:.0f} mm is implausible for a body scan "
                         f"(spacing_mm {spacing}); check the header's voxel size")
    return size


def prepare(image: Image, target_spacing_mm: float, body_clip_ratio: float | None = None,
            normalisation: str = "percentile_zscore") -> Prepared:
    """Reorient to RAS, normalise intensity, resample in-plane.

    Args:
        image: 3D image, any orientation.
        target_spacing_mm: in-plane spacing of the network, mm.
        body_clip_ratio: if given, first clip at this multiple of the body median
            (:func:`kidneyseg.preprocess.normalise.clip_body_ratio`; a model's
            ``TrainConfig.clip_ratio``).
        normalisation: a model's ``TrainConfig.normalisation``. ``"body_ratio"`` (needs
            ``body_clip_ratio``): :func:`kidneyseg.preprocess.normalise.body_ratio`; otherwise
            z-score after the 0.5/99.5 percentile clip
            (:func:`kidneyseg.preprocess.zscore_percentile`).

    Returns:
        :class:`Prepared`. In-plane size is ``round(n * spacing / target)`` per axis.

    Raises:
        InputError: an in-plane field of view under :data:`MIN_FOV_MM` (too small to hold a
            kidney) or a resampled slice larger than :data:`MAX_SLICE_PX` pixels per side
            (implausible spacing, e.g. metres); the body median cannot be taken (no positive
            voxel), named by file.
        ValueError: ``"body_ratio"`` without ``body_clip_ratio`` (a caller's bug).
    """
    canonical, reo = to_canonical(image, copy=False)  # a view: the clip / zscore_percentile copy it
    size = plane_size(image, canonical, 2, target_spacing_mm, "in-plane")
    src = image.source if image.source is not None else "image"
    if normalisation == "body_ratio" and body_clip_ratio is None:
        raise ValueError("prepare: normalisation 'body_ratio' needs body_clip_ratio")
    try:
        if normalisation == "body_ratio":
            vol = body_ratio(canonical.array, body_clip_ratio)
        else:
            vol = canonical.array if body_clip_ratio is None else clip_body_ratio(canonical.array, body_clip_ratio)
            vol = zscore_percentile(vol)
    except ValueError as exc:
        raise InputError(f"{src}: {exc}") from None
    vol = resize_slices(vol, size, mode="bilinear").numpy()
    return Prepared(vol, canonical, reo)


def slice_stack(volume: torch.Tensor, z: torch.Tensor, context: int) -> torch.Tensor:
    """Gather 2.5D inputs: slice ``z`` and ``context`` neighbours each side as channels.

    Args:
        volume: ``(X, Y, Z)`` tensor.
        z: int64 tensor ``(B,)`` of slice indices.
        context: neighbours per side; edges repeat the first/last slice.

    Returns:
        ``(B, 2 * context + 1, X, Y)`` tensor, channels ordered inferior to superior.
    """
    offsets = torch.arange(-context, context + 1)
    idx = (z[:, None] + offsets[None, :]).clamp(0, volume.shape[2] - 1)  # (B, C)
    return volume[:, :, idx].permute(2, 3, 0, 1)


TTA_SKIP_BELOW = 0.05
"""Summed kidney probability of the first pass below which a whole slice skips the remaining
test-time passes (:func:`predict_labels_2d`). With ``n`` passes and kidney threshold ``t``, a
skipped pixel would have needed the other passes to average ``(n * t - 0.05) / (n - 1)`` (0.38
for the shipped model's 4 passes and 0.3) to change its label. Measured with the shipped model
on 2026-12-03 (together with :mod:`kidneyseg.inference.cpu`): on the 15 CHAOS scans two masks
changed, by one voxel each; on the ukat gradient-echo scans, where that model fails, the specks
it calls kidney changed by up to 336 voxels and ``uncertain_fraction`` fell (range over the 30
ukat images 4.0-138 -> 4.0-52.6; CHAOS unchanged, 0.11-0.25), still far above its
``low_confidence`` threshold of 1.0. Speed: 4.3 s -> 2.9 s per CHAOS volume on one thread,
both changes together."""


def _slice_batches(network: torch.nn.Module, volume: np.ndarray, context: int, device: torch.device,
                   batch_slices: int, levels: int, tta: TestTimeAugmentation = NO_TTA,
                   kidney_classes: int | None = None):
    """Yield ``(z0, z1, probs)`` with softmax ``probs`` ``(B, C, X', Y')`` at the model's
    in-plane spacing for slices ``z0:z1``, averaged over the passes of ``tta``.

    With ``kidney_classes`` given, the passes after the first are run only on the slices where
    the first pass gives some pixel a summed kidney probability of at least
    :data:`TTA_SKIP_BELOW`; the other slices keep the first pass alone (TTA only changes
    decisions near the kidney, and most slices of an abdominal scan hold none).

    The slice is placed in a frame whose sides are multiples of ``2 ** (levels - 1)`` with at
    least ``tta.margin`` pixels of padding (the volume's minimum) on every side; a shift moves
    the frame's window, and each pass's output is cropped back to the slice's own pixels, so
    the passes are aligned exactly (no resampling). Without TTA the frame is the old one.
    """
    vol = torch.from_numpy(volume)
    nx, ny, nz = vol.shape
    m = 2 ** (levels - 1)
    s = tta.margin
    wx, wy = math.ceil((nx + 2 * s) / m) * m, math.ceil((ny + 2 * s) / m) * m  # network input size
    ox, oy = s + (wx - nx - 2 * s) // 2, s + (wy - ny - 2 * s) // 2  # slice origin in an unshifted window
    fill = float(vol.min())
    # big frame: window for shift (dx, dy) starts at (s - dx, s - dy); pixel u sits at u + ox + dx in it
    big = F.pad(vol.permute(2, 0, 1), (oy + s, wy - ny - oy + s, ox + s, wx - nx - ox + s), value=fill).permute(1, 2, 0)
    for start in range(0, nz, batch_slices):
        z = torch.arange(start, min(nz, start + batch_slices))
        stack = slice_stack(big, z, context)
        acc, rows = None, None
        for dx, dy in tta.shifts_px:
            x = stack[:, :, s - dx: s - dx + wx, s - dy: s - dy + wy]
            for mirror in ((False, True) if tta.mirror_x else (False,)):
                if rows is not None and len(rows) == 0:
                    continue
                xi = x.flip(2) if mirror else x
                xi = (xi if rows is None else xi[rows]).to(device)
                if device.type == "cpu":
                    xi = xi.contiguous(memory_format=torch.channels_last)
                p = torch.softmax(network(xi).float(), dim=1)
                if mirror:
                    p = p.flip(2)
                p = p[:, :, ox + dx: ox + dx + nx, oy + dy: oy + dy + ny]
                if acc is None:
                    acc = p
                    if kidney_classes is not None and tta.passes > 1:
                        peak = p[:, 1: kidney_classes + 1].sum(1).flatten(1).amax(1)
                        rows = torch.nonzero(peak >= TTA_SKIP_BELOW).flatten().to(p.device)
                elif rows is None:
                    acc = acc + p
                else:
                    acc[rows] += p
        if tta.passes > 1:
            if rows is None:
                acc = acc / tta.passes
            else:
                acc[rows] /= tta.passes
        yield start, start + len(z), acc.cpu()


@torch.inference_mode()
def predict_probabilities(network: torch.nn.Module, prepared: Prepared, context: int, device: torch.device,
                          batch_slices: int = 8, levels: int = 5, tta: TestTimeAugmentation = NO_TTA) -> torch.Tensor:
    """Softmax probabilities on the canonical grid.

    Args:
        network: 2D network mapping ``(B, 2*context+1, X, Y)`` to logits ``(B, C, X, Y)``.
        prepared: from :func:`prepare`.
        context: neighbours per side the network expects.
        device: where to run.
        batch_slices: slices per forward pass.
        levels: U-Net levels; inputs are padded to multiples of ``2 ** (levels - 1)``.
        tta: passes to average (default: one plain pass).

    Returns:
        float32 CPU tensor ``(C, X, Y, Z)`` on the canonical grid of ``prepared.canonical``
        (probabilities resampled back from the model's in-plane spacing, bilinear). Holds
        C float32 volumes; :func:`predict_labels` streams instead.
    """
    out = [p for _, _, p in _slice_batches(network, prepared.volume, context, device, batch_slices, levels, tta)]
    probs = torch.cat(out, 0).permute(1, 2, 3, 0)  # (C, X', Y', Z)
    return resize_slices(probs, prepared.canonical.shape[:2], mode="bilinear")


def decide_labels(probs: torch.Tensor, kidney_classes: int, threshold: float | None = None) -> torch.Tensor:
    """Labels from softmax probabilities.

    Args:
        probs: ``(B, C, ...)`` probabilities; classes ``1..kidney_classes`` are kidneys, any
            further classes auxiliary organs.
        kidney_classes: number of kidney classes.
        threshold: ``None`` for the argmax. Otherwise a voxel is kidney when the kidney
            classes' summed probability is at least ``threshold`` (its label then the most
            probable kidney class), else the most probable non-kidney class. A threshold under
            0.5 trades precision for recall where the network hesitates at the kidney's edge.

    Returns:
        int64 ``(B, ...)`` labels.
    """
    if threshold is None:
        return probs.argmax(1)
    kid = probs[:, 1: kidney_classes + 1]
    other = torch.cat([probs[:, :1], probs[:, kidney_classes + 1:]], 1).argmax(1)
    other = torch.where(other == 0, other, other + kidney_classes)
    return torch.where(kid.sum(1) >= threshold, kid.argmax(1) + 1, other)


@torch.inference_mode()
def predict_labels_2d(network: torch.nn.Module, prepared: Prepared, context: int, device: torch.device,
                      batch_slices: int = 8, levels: int = 5, tta: TestTimeAugmentation = NO_TTA,
                      kidney_classes: int = 1, threshold: float | None = None,
                      kidney_probability: np.ndarray | None = None, skip_empty_slices: bool = True) -> np.ndarray:
    """:func:`decide_labels` of :func:`predict_probabilities`, computed batch by batch of
    slices so that only uint8 labels are held for the whole volume (the resampling is
    in-plane, so the result is identical).

    Args:
        kidney_probability: if given, a float32 ``(X, Y, Z)`` array filled with the summed
            kidney probability on the canonical grid (for the confidence QC flag).
        skip_empty_slices: run the test-time passes after the first only on slices where the
            first finds kidney (:data:`TTA_SKIP_BELOW`); ``False`` runs every pass on every slice.

    Returns:
        uint8 ``(X, Y, Z)`` on the canonical grid.
    """
    size = tuple(prepared.canonical.shape[:2])
    labels = np.empty(prepared.canonical.shape, dtype=np.uint8)
    for z0, z1, probs in _slice_batches(network, prepared.volume, context, device, batch_slices, levels, tta,
                                        kidney_classes if skip_empty_slices else None):
        if tuple(probs.shape[2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        labels[:, :, z0:z1] = decide_labels(probs, kidney_classes, threshold).to(torch.uint8).permute(1, 2, 0).numpy()
        if kidney_probability is not None:
            kidney_probability[:, :, z0:z1] = probs[:, 1: kidney_classes + 1].sum(1).permute(1, 2, 0).numpy()
    return labels


@torch.inference_mode()
def predict_probabilities_3d(network: torch.nn.Module, prepared: Prepared, patch_size: tuple[int, int, int],
                             device: torch.device, overlap: float = 0.5) -> torch.Tensor:
    """Softmax probabilities of a 3D network by Gaussian-weighted sliding window
    (:func:`kidneyseg.inference.sliding_window.sliding_window_logits`, half-patch overlap as nnU-Net).

    Returns:
        float32 CPU tensor ``(C, X, Y, Z)`` on the canonical grid of ``prepared.canonical``:
        resampled in-plane (bilinear) when ``prepared.volume`` keeps the canonical slices,
        otherwise on all three axes (trilinear, e.g. an isotropic working grid).
    """
    from .sliding_window import sliding_window_logits

    x = torch.from_numpy(np.ascontiguousarray(prepared.volume, dtype=np.float32))[None, None]
    logits = sliding_window_logits(network, x, patch_size, device, sw_batch_size=2, overlap=overlap)
    probs = torch.softmax(logits, dim=1)[0]
    shape = tuple(prepared.canonical.shape)
    if probs.shape[-1] != shape[-1]:
        return F.interpolate(probs[None], size=shape, mode="trilinear", align_corners=False)[0]
    return resize_slices(probs, shape[:2], mode="bilinear")


def normalise_slices(stack: np.ndarray) -> np.ndarray:
    """Each slice ``stack[:, :, k]`` clipped at its own 0.5/99.5 percentiles and z-scored
    (a constant slice becomes zeros), as the multiplane recipe normalises its synthesised
    training slices (:func:`kidneyseg.training.synth.normalise_slice`).

    Args:
        stack: ``(A, B, K)`` array, K slices.

    Returns:
        float32 ``(A, B, K)``.
    """
    out = np.empty(stack.shape, np.float32)
    for k in range(stack.shape[2]):
        out[:, :, k] = zscore_percentile(stack[:, :, k], constant_ok=True)
    return out


def plane_sizes(image: Image, canonical: Image, axes: list[int], target_spacing_mm: float,
                required: list[int] = ()) -> dict[int, tuple[int, int]]:
    """:func:`plane_size` of each of ``axes`` that is wide enough for a kidney, in order; a
    plane too narrow (e.g. the axial plane of a coronal slab under ``planes="all"``) is left out.

    Raises:
        InputError: an axis in ``required`` (the acquisition plane) is too narrow, as
            :func:`plane_size` says.
    """
    sizes = {}
    for axis in axes:
        try:
            sizes[axis] = plane_size(image, canonical, axis, target_spacing_mm, "acquisition-plane")
        except InputError:
            if axis in required:
                raise
    return sizes


def planes_used(canonical: Image, acquisition: list[int], planes: str) -> list[int]:
    """Canonical axes whose planes a ``recipe="multiplane"`` 2D model segments (before a plane
    too narrow for a kidney is left out): ``acquisition`` (:func:`acquisition_axes`) for
    ``planes="acquisition"``, all three for ``"all"``, and for ``"coverage"`` all three when the
    scan is not a slab (:func:`kidneyseg.io.orientation.covers_planes`), else ``acquisition``;
    ``"fov"`` is ``"coverage"`` except on a near-isotropic scan, which gets its
    :func:`~kidneyseg.io.orientation.wide_planes` instead of all three.

    Args:
        canonical: the RAS image (its ``shape`` and ``spacing_mm`` are read).
        acquisition: :func:`acquisition_axes` of its spacing.
        planes: :attr:`~kidneyseg.inference.settings.InferenceConfig.planes`.
    """
    if len(acquisition) == 3 and planes == "fov":
        return wide_planes(canonical)
    if planes == "all" or len(acquisition) == 3 or (planes in ("coverage", "fov") and covers_planes(canonical)):
        return [0, 1, 2]
    return list(acquisition)


@torch.inference_mode()
def predict_multiplane(network: torch.nn.Module, image: Image, config, device: torch.device,
                       inference: InferenceConfig | None = None) -> tuple[np.ndarray, Prepared, torch.Tensor]:
    """Labels of a ``recipe="multiplane"`` 2D network, applied in the acquisition plane.

    The canonical volume is z-scored (0.5/99.5 percentile clip; each slice on its own with
    ``inference.normalise == "slice"``, :func:`normalise_slices`; once per gamma of
    ``inference.tta_gamma``, :func:`~kidneyseg.preprocess.normalise.gamma_zscore`), each plane of
    :func:`acquisition_axes` (or the planes :func:`planes_used` gives for ``inference.planes``,
    leaving out a plane whose field of view is too small for a kidney) is resampled in-plane to ``config.target_spacing_mm`` and
    segmented slice by slice (the acquisition plane with the model's test-time shifts; a plane
    added to it with one plain pass, its slices cut at ``config.target_spacing_mm`` when finer,
    :func:`~kidneyseg.preprocess.resize_slice_axis`), the softmax resampled back (bilinear, and
    linearly across cut slices) and averaged over planes (and gammas).

    Returns:
        ``(labels, prepared, probabilities)``: uint8 ``(X, Y, Z)`` labels on
        ``prepared.canonical``'s grid, the :class:`Prepared` (its ``volume`` is the normalised
        canonical volume, not resampled), and the float32 ``(C, X, Y, Z)`` averaged softmax.
    """
    inference = inference or InferenceConfig()
    if config.spatial_dims == 3:
        canonical, reo = to_canonical(image, copy=False)
        src = image.source if image.source is not None else "image"
        return _predict_isotropic_3d(network, canonical, reo, config, device, inference, src)
    return _predict_multiplane_2d([network], image, config, device, inference)[:3]


@torch.inference_mode()
def _predict_multiplane_2d(networks: list[torch.nn.Module], image: Image, config, device: torch.device,
                           inference: InferenceConfig):
    """:func:`predict_multiplane` of one or more 2D networks, the normalisation and plane
    resampling done once for all of them. Their softmax is averaged before the decision, as a
    :class:`~kidneyseg.models.store.SoftmaxEnsemble`'s forward averages it (every pass and the
    plane resampling are linear in it, so the result equals the fused network's up to float32
    rounding; for one network it is that network's, bit for bit).

    Returns:
        ``(labels, prepared, probs, per_network)``: as :func:`predict_multiplane`, and the list of
        each network's own float32 ``(C, X, Y, Z)`` softmax.
    """
    canonical, reo = to_canonical(image, copy=False)
    src = image.source if image.source is not None else "image"
    acquisition = acquisition_axes(canonical.spacing_mm)
    sizes = plane_sizes(image, canonical, planes_used(canonical, acquisition, inference.planes),
                        config.target_spacing_mm, required=acquisition)
    axes = list(sizes)
    try:
        vol = zscore_percentile(canonical.array)
    except ValueError as exc:
        raise InputError(f"{src}: {exc}") from None
    totals = [None] * len(networks)
    for gamma in inference.tta_gamma:
        if gamma == 1.0:
            view, raw = vol, canonical.array
        else:  # intensity test-time augmentation: the same scan at another gamma
            view = gamma_zscore(canonical.array, gamma)
            raw = view
        for axis in axes:
            moved = np.moveaxis(view, axis, 2)  # slices of this plane along the last axis
            if inference.normalise == "slice":
                moved = normalise_slices(np.moveaxis(raw, axis, 2))
            # an added plane whose slices are finer than the model's grid is cut at the model's
            # spacing (e.g. CHAOS's 1.25 mm columns at 2 mm), its softmax resampled back linearly
            k = moved.shape[2]
            sp = canonical.spacing_mm[axis]
            finer = axis not in acquisition and sp < config.target_spacing_mm
            k_net = max(1, round(k * sp / config.target_spacing_mm)) if finer else k
            cut = moved if k_net == k else resize_slice_axis(np.ascontiguousarray(moved), k_net).numpy()
            plane = resize_slices(np.ascontiguousarray(cut), sizes[axis], mode="bilinear").numpy()
            if axis not in acquisition:
                # a plane added to the acquisition plane(s) (planes "all" / "coverage") gets one
                # plain pass: averaging planes already does what the shifted passes do, and the
                # added planes hold 3-5 times the acquisition plane's slices (benchmarks/README.md,
                # "Planes by coverage"); the acquisition plane's output stays as it was
                tta = NO_TTA
            elif axis == 0:  # a sagittal plane has no left-right axis to mirror
                tta = replace(inference.tta, mirror_x=False)
            else:  # the mirror pass flips the first in-plane axis: x in axial and coronal planes
                tta = inference.tta
            for n, network in enumerate(networks):
                out = [p for _, _, p in _slice_batches(network, plane, 0, device, 8, len(config.channels), tta)]
                probs = resize_slices(torch.cat(out, 0).permute(1, 2, 3, 0), moved.shape[:2], mode="bilinear")
                if k_net != k:
                    probs = resize_slice_axis(probs, k)
                probs = probs.permute(0, *[1 + a for a in np.argsort([*(a for a in range(3) if a != axis), axis])])
                totals[n] = probs if totals[n] is None else totals[n] + probs
    per_network = [t / (len(axes) * len(inference.tta_gamma)) for t in totals]
    probs = per_network[0] if len(per_network) == 1 else sum(per_network) / len(per_network)
    labels = decide_labels(probs[None], config.kidney_classes, inference.kidney_threshold)[0].to(torch.uint8).numpy()
    return labels, Prepared(vol, canonical, reo, tuple(axes)), probs, per_network


def _predict_isotropic_3d(network, canonical: Image, reo, config, device: torch.device, inference: InferenceConfig,
                          src: str) -> tuple[np.ndarray, Prepared, torch.Tensor]:
    """:func:`predict_multiplane` for a 3D network: the z-scored canonical volume resampled to
    ``config.target_spacing_mm`` on every axis, then :func:`predict_probabilities_3d` (sliding
    window, softmax resampled back to the canonical grid)."""
    from ..preprocess import resample_isotropic

    try:
        vol = zscore_percentile(canonical.array)
    except ValueError as exc:
        raise InputError(f"{src}: {exc}") from None
    probs = None
    for gamma in inference.tta_gamma:
        view = vol if gamma == 1.0 else gamma_zscore(canonical.array, gamma)
        iso = resample_isotropic(view, canonical.spacing_mm, config.target_spacing_mm)
        p = predict_probabilities_3d(network, Prepared(iso, canonical, reo), config.patch_size, device)
        probs = p if probs is None else probs + p
    probs = probs / len(inference.tta_gamma)
    labels = decide_labels(probs[None], config.kidney_classes, inference.kidney_threshold)[0].to(torch.uint8).numpy()
    return labels, Prepared(vol, canonical, reo), probs


def ensemble_members(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The member networks of a softmax ensemble
    (:class:`kidneyseg.models.store.SoftmaxEnsemble`, or its traced copy, which keeps the
    ``members`` submodules), or ``[]`` for a single network."""
    members = getattr(network, "members", None)
    nets = list(members.children()) if members is not None else []  # a traced ModuleList has no len()
    return nets if len(nets) > 1 else []


def _kidney_mask(probs: torch.Tensor, kidney_classes: int, threshold: float | None) -> np.ndarray:
    """Bool ``(X, Y, Z)``: where :func:`decide_labels` of ``(C, X, Y, Z)`` probabilities says kidney."""
    labels = decide_labels(probs[None], kidney_classes, threshold)[0]
    return ((labels >= 1) & (labels <= kidney_classes)).numpy()


def predict_labels(network: torch.nn.Module, image: Image, config, device: torch.device,
                   inference: InferenceConfig | None = None, with_probability: bool = False,
                   with_members: bool = False):
    """Labels on the canonical grid (no post-processing).

    Args:
        network: the trained network, eval mode.
        image: 3D image, any orientation.
        config: its :class:`~kidneyseg.training.TrainConfig` (spacing, 2D/3D, context, patch,
            recipe).
        device: where to run.
        inference: test-time augmentation and decision threshold (2D networks); ``None``
            for one plain pass and the argmax.
        with_probability: also return the summed kidney probability.
        with_members: with ``with_probability``, also return each ensemble member's own kidney
            mask (2D multiplane ensembles; ``None`` otherwise), for
            :func:`kidneyseg.postprocess.quality.member_dice`. The members are then run one
            after the other instead of inside the fused network: the same passes, the same
            fused result up to float32 rounding.

    Returns:
        ``(labels, prepared)``, or with ``with_probability`` ``(labels, prepared, kidney_probability)``
        (and ``member_kidney`` after it with ``with_members``):
        uint8 ``(X, Y, Z)`` labels on ``prepared.canonical``'s grid (map them to the input grid
        with :func:`kidneyseg.io.from_canonical`), float32 ``(X, Y, Z)`` probability on the
        same grid, and a list of bool ``(X, Y, Z)`` masks, one per member, or ``None``.
    """
    if getattr(config, "recipe", "slices") == "multiplane":
        members = ensemble_members(network) if with_members and with_probability and config.spatial_dims == 2 else []
        if members:
            inference = inference or InferenceConfig()
            labels, prepared, probs, per_network = _predict_multiplane_2d(members, image, config, device, inference)
            member_kidney = [_kidney_mask(p, config.kidney_classes, inference.kidney_threshold) for p in per_network]
        else:
            labels, prepared, probs = predict_multiplane(network, image, config, device, inference)
            member_kidney = None
        if with_probability:
            kidney = probs[1: config.kidney_classes + 1].sum(0).numpy()
            return (labels, prepared, kidney, member_kidney) if with_members else (labels, prepared, kidney)
        return labels, prepared
    inference = inference or InferenceConfig()
    if inference.tta_gamma != (1.0,):
        raise ValueError(f"tta_gamma {list(inference.tta_gamma)}: only models of recipe 'multiplane' take intensity "
                         "test-time augmentation")
    prepared = prepare(image, config.target_spacing_mm, config.clip_ratio, config.normalisation)
    if config.spatial_dims == 3:
        probs = predict_probabilities_3d(network, prepared, config.patch_size, device)
        labels = decide_labels(probs[None], config.kidney_classes, inference.kidney_threshold)[0].to(torch.uint8).numpy()
        if with_probability:
            kidney = probs[1: config.kidney_classes + 1].sum(0).numpy()
            return (labels, prepared, kidney, None) if with_members else (labels, prepared, kidney)
        return labels, prepared
    kidney = np.empty(prepared.canonical.shape, np.float32) if with_probability else None
    labels = predict_labels_2d(network, prepared, config.context_slices, device, levels=len(config.channels),
                               tta=inference.tta, kidney_classes=config.kidney_classes,
                               threshold=inference.kidney_threshold, kidney_probability=kidney)
    if with_probability:
        return (labels, prepared, kidney, None) if with_members else (labels, prepared, kidney)
    return labels, prepared
