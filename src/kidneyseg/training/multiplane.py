"""Training data of the plane-agnostic MR kidney network (``TrainConfig.recipe="multiplane"``):
isotropic volumes, 2D patches in any of the three planes, half or more of them synthesised
from label maps (:mod:`kidneyseg.training.synth`), and a loss for partly labelled images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..arrays import crop_around
from ..datasets import Case
from ..io import PLANE_AXES, Image, to_canonical
from ..preprocess import resample_isotropic, zscore_percentile
from ..specs.mr_unet import TrainConfig
from .data import foreground_slots
from .synth import (IGNORE, NOT_KIDNEY, PlaneVolume, SynthesisRanges, body_mask, generation_map, normalise_slice,
                    organ_outline, random_intensity_curve, synthesise_slice, synthesise_volume, take_plane)


def case_target(case: Case, image: Image, ref: Image, config: TrainConfig) -> np.ndarray:
    """The network target of one case on the image's own grid: 1 kidney (both sides), ``2..``
    the auxiliary organs of ``config.auxiliary_labels`` the dataset has drawn, 0 background; when
    the dataset draws none of the auxiliary organs (ukat: kidneys only), every non-kidney voxel
    is :data:`~kidneyseg.training.synth.NOT_KIDNEY`; voxels outside ``case.labelled_slices``
    are :data:`~kidneyseg.training.synth.IGNORE`.

    Returns:
        uint8 array of ``image.shape``.
    """
    raw = np.asarray(ref.array).astype(np.int64).reshape(image.shape)
    kidney = np.isin(raw, [v for v in case.label_values])
    names = set(case.file_labels.values())
    has_aux = any(n in names for n in config.auxiliary_labels)
    target = np.zeros(image.shape, np.uint8) if has_aux else np.full(image.shape, NOT_KIDNEY, np.uint8)
    for j, name in enumerate(config.auxiliary_labels):
        values = [v for v, n in case.file_labels.items() if n == name]
        if values:
            target[np.isin(raw, values)] = 2 + j
    target[kidney] = 1
    if case.labelled_slices is not None:
        axis, indices = case.labelled_slices
        keep = np.zeros(image.shape[axis], bool)
        keep[list(indices)] = True
        shape = [1, 1, 1]
        shape[axis] = -1
        target[~np.broadcast_to(keep.reshape(shape), image.shape)] = IGNORE
    return target


def load_plane_volume(case: Case, config: TrainConfig, read: tuple[Image, Image]) -> PlaneVolume:
    """Reorient one case to RAS, resample it to ``config.target_spacing_mm`` on every axis and
    build its generation label map (:func:`kidneyseg.training.synth.generation_map`).

    Args:
        case: the case.
        config: a ``recipe="multiplane"`` config.
        read: its :func:`kidneyseg.training.data.read_case` result.
    """
    image, ref = read
    target = case_target(case, image, ref, config)
    canon, _ = to_canonical(image)
    tgt_c, _ = to_canonical(image.with_array(target))
    sp = canon.spacing_mm
    iso = config.target_spacing_mm
    vol = zscore_percentile(resample_isotropic(canon.array, sp, iso))
    # labels: kidney / organs by interpolating each binary mask (smoother than nearest across
    # thick slices); ignore / not-kidney by nearest
    tgt = resample_isotropic(tgt_c.array, sp, iso, mode="nearest-exact").astype(np.uint8)
    organ_values = [v for v in np.unique(tgt_c.array) if 0 < v < NOT_KIDNEY]
    if organ_values:
        onehot = np.stack([tgt_c.array == v for v in organ_values]).astype(np.float32)
        smooth = resample_isotropic(onehot, sp, iso)
        best = smooth.argmax(0)
        organ = smooth.max(0) >= 0.5
        keep = (tgt != IGNORE)
        background = NOT_KIDNEY if (tgt_c.array == NOT_KIDNEY).any() else 0
        base = np.where(tgt < NOT_KIDNEY, background, tgt).astype(np.uint8)
        tgt = np.where(keep, np.where(organ, np.asarray(organ_values, np.uint8)[best], base), IGNORE).astype(np.uint8)
    body = body_mask(vol)
    organs = np.where(tgt < NOT_KIDNEY, tgt, 0).astype(np.uint8)
    gen = generation_map(vol, organs, body | (organs > 0), config.tissue_classes, config.kidney_subclasses,
                         config.seed, config.generation_smoothing_px, config.perirenal_shell_mm / iso)
    index = axis = None
    if (tgt == IGNORE).any():  # partly labelled: sample the labelled slices only, in their plane
        labelled = tgt != IGNORE
        index = np.flatnonzero(labelled)
        extent = [np.ptp(np.flatnonzero(labelled.any(axis=tuple(a for a in range(3) if a != ax)))) for ax in range(3)]
        axis = int(np.argmin(extent))
    return PlaneVolume(case.case_id, vol.astype(np.float32), tgt, gen, np.argwhere(tgt == 1), index, axis)


def _patch_centre(v: PlaneVolume, foreground: bool, patch: int, rng: np.random.Generator) -> np.ndarray:
    """A patch centre (voxel index ``(3,)``, inside the volume): for a ``foreground`` patch a
    kidney voxel shifted by up to a quarter ``patch`` (nnU-Net's foreground oversampling);
    else a labelled voxel of a partly labelled volume, or any voxel."""
    if foreground and len(v.fg):
        centre = v.fg[rng.integers(len(v.fg))] + rng.integers(-patch // 4, patch // 4 + 1, 3)
        return np.clip(centre, 0, np.array(v.image.shape) - 1)
    if v.labelled_index is not None:
        idx = v.labelled_index
        return np.array(np.unravel_index(idx[rng.integers(idx.size)], v.image.shape))
    return np.array([rng.integers(n) for n in v.image.shape])


def _mirror_lr(img: np.ndarray, tgt: np.ndarray, config: TrainConfig, rng: np.random.Generator,
               lr_axis: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """With ``config.augment_flip_lr``, mirror a patch along the patient's left-right axis
    (``lr_axis`` of the patch; ``None`` for a sagittal patch, which has none) with probability
    0.5. The multiplane target has one kidney class for both sides, so no label changes: a
    mirrored body shows each kidney in the other kidney's surroundings (liver or spleen)."""
    if not config.augment_flip_lr or lr_axis is None or rng.random() >= 0.5:
        return img, tgt
    return np.ascontiguousarray(np.flip(img, lr_axis)), np.ascontiguousarray(np.flip(tgt, lr_axis))


def _augment_into(img: np.ndarray, tgt: np.ndarray, transform, images: list, labels: list) -> None:
    """Apply ``transform`` (MONAI dictionary transforms, may be ``None``) to one patch and
    append it: the image as float32 ``(1, ...)``, the target as int64 ``(1, ...)``."""
    if transform is not None:
        out = transform({"image": img[None], "label": tgt[None].astype(np.float32)})
        img, tgt = np.asarray(out["image"])[0], np.asarray(out["label"])[0]
    images.append(torch.as_tensor(np.asarray(img, dtype=np.float32))[None])
    labels.append(torch.as_tensor(np.asarray(tgt)).round().long()[None])


def sample_plane_batch(volumes: list[PlaneVolume], config: TrainConfig, rng: np.random.Generator,
                       transform) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of 2D patches for the ``multiplane`` recipe.

    Per patch: a volume; a plane (``config.plane_weights``; a partly labelled volume only in
    the plane of its labelled slices); a centre (a kidney voxel for the patches
    :func:`~kidneyseg.training.data.foreground_slots` picks, nnU-Net's foreground
    oversampling; else any labelled voxel); then with probability ``config.synth_fraction``
    an image synthesised from the generation map over a random slab thickness, otherwise the
    real slice, a share ``config.intensity_curve_fraction`` of the time through a random
    intensity curve; a share ``config.synth_outline_fraction`` of the synthesised patches get a
    dark line along the organ borders (:func:`~kidneyseg.training.synth.organ_outline`); with
    ``config.augment_flip_lr`` an axial or coronal patch is mirrored
    left-right half the time. ``transform`` (MONAI, from
    :func:`kidneyseg.training.data.augmentation`) adds rotation, zoom, noise and gamma.

    A 3D network (``config.spatial_dims == 3``) gets :func:`sample_volume_batch` instead.

    Returns:
        ``(images (B, 1, P, P) float32, targets (B, 1, P, P) int64)``; targets may hold
        :data:`~kidneyseg.training.synth.IGNORE` and :data:`~kidneyseg.training.synth.NOT_KIDNEY`.
    """
    if config.spatial_dims == 3:
        return sample_volume_batch(volumes, config, rng, transform)
    names = list(PLANE_AXES)
    weights = np.array([config.plane_weights[n] for n in names], float)
    weights /= weights.sum()
    on_fg = foreground_slots(config.batch_size, config.foreground_fraction, rng)
    ranges = SynthesisRanges()
    images, labels = [], []
    for b in range(config.batch_size):
        v = volumes[rng.integers(len(volumes))]
        centre = _patch_centre(v, on_fg[b], config.patch_size[0], rng)
        if v.labelled_axis is not None:
            axis = v.labelled_axis
        else:
            axis = PLANE_AXES[names[rng.choice(len(names), p=weights)]]
        in_plane = [a for a in range(3) if a != axis]
        c2 = (int(centre[in_plane[0]]), int(centre[in_plane[1]]))
        tgt = crop_around(take_plane(v.target, axis, int(centre[axis]))[0], c2, config.patch_size, IGNORE)
        if rng.random() < config.synth_fraction:
            thick = rng.uniform(*ranges.thickness_mm)
            half = int(round((thick / config.target_spacing_mm - 1) / 2))
            slab = take_plane(v.generation, axis, int(centre[axis]), half)
            outline = None
            if config.synth_outline_fraction > 0 and rng.random() < config.synth_outline_fraction:
                organs = take_plane(v.target, axis, int(centre[axis]), half)
                outline = organ_outline(np.where(organs < NOT_KIDNEY, organs, 0))
            img = normalise_slice(synthesise_slice(slab, rng, config.target_spacing_mm, ranges, outline))
        else:
            img = take_plane(v.image, axis, int(centre[axis]))[0]
            if rng.random() < config.intensity_curve_fraction:
                img = normalise_slice(random_intensity_curve(img, rng))
        img = crop_around(img, c2, config.patch_size, float(img.min()))
        img, tgt = _mirror_lr(img, tgt, config, rng, None if axis == 0 else 0)  # RAS: x is in-plane axis 0
        _augment_into(img, tgt, transform, images, labels)
    return torch.stack(images), torch.stack(labels)


def sample_volume_batch(volumes: list[PlaneVolume], config: TrainConfig, rng: np.random.Generator,
                        transform) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of 3D patches for a 3D network of the ``multiplane`` recipe: the same centres
    as :func:`sample_plane_batch` (foreground oversampling; labelled voxels only of a partly
    labelled volume), then with probability ``config.synth_fraction`` an image synthesised
    from the generation map (:func:`~kidneyseg.training.synth.synthesise_volume`), otherwise
    the real patch, a share ``config.intensity_curve_fraction`` of the time through a random
    intensity curve; with ``config.augment_flip_lr`` mirrored left-right half the time;
    ``transform`` (MONAI) adds rotation, zoom, noise and gamma.

    Returns:
        ``(images (B, 1, P, P, P) float32, targets (B, 1, P, P, P) int64)``.
    """
    on_fg = foreground_slots(config.batch_size, config.foreground_fraction, rng)
    size = tuple(config.patch_size)
    ranges = SynthesisRanges()
    images, labels = [], []
    for b in range(config.batch_size):
        v = volumes[rng.integers(len(volumes))]
        c3 = tuple(int(c) for c in _patch_centre(v, on_fg[b], size[0], rng))
        tgt = crop_around(v.target, c3, size, IGNORE)
        if rng.random() < config.synth_fraction:
            img = normalise_slice(synthesise_volume(crop_around(v.generation, c3, size, 0), rng,
                                                    config.target_spacing_mm, ranges))
        else:
            img = crop_around(v.image, c3, size, float(v.image.min()))
            if rng.random() < config.intensity_curve_fraction:
                img = normalise_slice(random_intensity_curve(img, rng))
        img, tgt = _mirror_lr(img, tgt, config, rng)
        _augment_into(img, tgt, transform, images, labels)
    return torch.stack(images), torch.stack(labels)


def partial_dice_ce(logits: torch.Tensor, target: torch.Tensor, kidney_classes: int = 1,
                    smooth: float = 1e-5) -> torch.Tensor:
    """Dice + cross-entropy for partly labelled targets.

    Cross-entropy is averaged over labelled pixels; where the target is
    :data:`~kidneyseg.training.synth.NOT_KIDNEY` it is ``-log`` of the summed probability of
    the non-kidney classes (the marginal likelihood of what is known). Soft Dice (batch Dice,
    as MONAI ``DiceLoss(batch=True)``) is taken per foreground class over the pixels where that
    class is known: the kidney classes over every labelled pixel, other classes over fully
    labelled pixels only. :data:`~kidneyseg.training.synth.IGNORE` pixels add nothing.

    Args:
        logits: float ``(B, C, H, W)`` (or ``(B, C, X, Y, Z)``).
        target: int64 ``(B, 1, ...)`` of the same spatial shape, in ``0..C-1`` or IGNORE / NOT_KIDNEY.
        kidney_classes: classes ``1..kidney_classes`` are kidney.

    Returns:
        scalar loss; 0 (with a gradient) when no pixel is labelled.
    """
    t = target[:, 0]
    logp = F.log_softmax(logits.float(), 1)
    labelled = t != IGNORE
    full = labelled & (t != NOT_KIDNEY)
    c = logits.shape[1]
    safe = torch.where(full, t, torch.zeros_like(t))
    ce_full = -logp.gather(1, safe[:, None])[:, 0]
    not_kidney = [0] + list(range(kidney_classes + 1, c))
    ce_nk = -torch.logsumexp(logp[:, not_kidney], 1)
    ce = torch.where(full, ce_full, torch.where(t == NOT_KIDNEY, ce_nk, torch.zeros_like(ce_nk)))
    n = labelled.sum()
    if n == 0:
        return logits.sum() * 0.0
    loss = ce.sum() / n
    p = logp.exp()
    dices = []
    for k in range(1, c):
        region = labelled if k <= kidney_classes else full
        if not region.any():
            continue
        g = ((t == k) & region).float()
        pk = p[:, k] * region.float()
        dices.append(1 - (2 * (pk * g).sum() + smooth) / (pk.sum() + g.sum() + smooth))
    if dices:
        loss = loss + torch.stack(dices).mean()
    return loss
