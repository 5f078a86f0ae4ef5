"""In-memory training volumes, foreground-oversampling patch sampler and augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai import transforms as mt

from ..arrays import crop_around
from ..datasets import Case
from ..inference.predict import prepare
from ..io import Image, check_volume, read_image, to_canonical
from ..preprocess import resize_slices
from ..specs.mr_unet import ELASTIC_MAGNITUDE_PX, ELASTIC_SPACING_PX, TrainConfig


@dataclass
class Volume:
    """A prepared training case: image ``(X, Y, Z)`` float32 z-scored and label uint8, both
    on the canonical RAS grid at the model's in-plane spacing; ``fg`` holds the
    ``(N, 3)`` indices of kidney voxels for foreground oversampling."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    fg: np.ndarray


def read_case(case: Case) -> tuple[Image, Image]:
    """``(image, label)`` of one training case, the image float32 and checked
    (:func:`kidneyseg.io.check_volume`).

    Raises:
        ValueError: the label's grid (shape or affine) differs from the image's.
    """
    image = check_volume(read_image(case.image, dtype=np.float32))
    ref = read_image(case.label)
    if case.label_parts:  # one binary mask file per structure: combine them
        combined = np.zeros(ref.shape[:3], np.uint8)
        for path, value in case.label_parts:
            part = read_image(path)
            if part.shape[:3] != ref.shape[:3]:
                raise ValueError(f"{path}: label grid differs from {case.label}")
            combined[np.asarray(part.array).reshape(ref.shape[:3]) > 0] = value
        ref = ref.with_array(combined)
    if ref.shape[:3] != image.shape or not np.allclose(ref.affine, image.affine, atol=1e-3):
        raise ValueError(f"{case.label}: label grid differs from {case.image}")
    return image, ref


def load_volume(case: Case, config: TrainConfig, read: tuple[Image, Image] | None = None) -> Volume:
    """Read, reorient, normalise and resample one case exactly as inference does.

    ``read``: the case's :func:`read_case` result when the caller already has it."""
    image, ref = read if read is not None else read_case(case)
    label = case.kidneyseg_labels(np.asarray(ref.array).reshape(image.shape))
    if config.merge_sides:
        label = (label > 0).astype(np.uint8)
    raw = None
    for j, name in enumerate(config.auxiliary_labels):
        values = [v for v, n in case.file_labels.items() if n == name]
        if values:
            raw = np.asarray(ref.array).astype(np.int64).reshape(image.shape) if raw is None else raw
            label[np.isin(raw, values) & (label == 0)] = 1 + config.kidney_classes + j
    prepared = prepare(image, config.target_spacing_mm, config.clip_ratio, config.normalisation)
    label_c, _ = to_canonical(image.with_array(label))
    label_r = resize_slices(label_c.array, prepared.volume.shape[:2], mode="nearest-exact").numpy().astype(np.uint8)
    fg = (label_r > 0) & (label_r <= config.kidney_classes)
    return Volume(case.case_id, prepared.volume, label_r, np.argwhere(fg))


def flip_left_right(image: np.ndarray, label: np.ndarray, label_map: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a canonical (RAS) patch along the patient's left-right axis and swap the labels.

    Args:
        image: ``(C, X, Y)`` patch, axis ``X`` = patient right-left.
        label: ``(1, X, Y)`` or ``(X, Y)`` integer labels.
        label_map: value -> name; every ``*_right`` name swaps value with its ``*_left`` twin.

    Returns:
        Mirrored ``(image, label)``: what was the right kidney is now labelled left, as
        anatomy demands after a mirror. Labels without a twin keep their value.
    """
    by_name = {n: v for v, n in label_map.items()}
    lut = np.arange(max(max(label_map), int(label.max())) + 1, dtype=label.dtype)
    for v, n in label_map.items():
        for a, b in (("_right", "_left"), ("_left", "_right")):
            if n.endswith(a) and n[: -len(a)] + b in by_name:
                lut[v] = by_name[n[: -len(a)] + b]
    return np.ascontiguousarray(image[:, ::-1]), lut[np.ascontiguousarray(label[..., ::-1, :])]


def augmentation(config: TrainConfig) -> mt.Compose:
    """MONAI dictionary transforms on ``{"image": (C, X, Y), "label": (1, X, Y)}``:
    rotation and zoom (p 0.5); with ``augment_elastic_prob`` > 0 an elastic deformation
    (MONAI ``Rand2DElasticd``, see :class:`TrainConfig`); Gaussian noise (p 0.15), intensity
    scale (p 0.3), gamma (p 0.3); with ``augment_intensity="strong"`` also a histogram shift
    (p 0.5) and a bias field (p 0.3). Mirroring is handled by :func:`flip_left_right` because
    it changes labels. Without the elastic deformation the list (and so the random stream
    ``set_random_state`` gives each transform) is the same as before it existed."""
    rot = np.deg2rad(config.augment_rotation_deg)
    if config.spatial_dims == 3:  # rotate about the slice axis, zoom in-plane only
        rotate, scale = (0.0, 0.0, rot), (config.augment_scale, config.augment_scale, 0.0)
    else:
        rotate, scale = (rot,), (config.augment_scale, config.augment_scale)
    transforms = [
        mt.RandAffined(keys=["image", "label"], prob=0.5, rotate_range=rotate, scale_range=scale,
                       mode=("bilinear", "nearest"), padding_mode="border"),
    ]
    if config.augment_elastic_prob > 0:
        transforms.append(mt.Rand2DElasticd(keys=["image", "label"], spacing=(ELASTIC_SPACING_PX,) * 2,
                                            magnitude_range=ELASTIC_MAGNITUDE_PX, prob=config.augment_elastic_prob,
                                            mode=("bilinear", "nearest"), padding_mode="border"))
    if config.augment_intensity == "strong":
        transforms += [
            mt.RandBiasFieldd(keys=["image"], degree=3, coeff_range=(0.0, 0.3), prob=0.3),
            mt.RandHistogramShiftd(keys=["image"], num_control_points=(5, 10), prob=0.5),
        ]
    transforms += [
        mt.RandGaussianNoised(keys=["image"], prob=0.15, std=0.1),
        mt.RandScaleIntensityd(keys=["image"], factors=0.25, prob=0.3),
        mt.RandAdjustContrastd(keys=["image"], prob=0.3, gamma=(0.7, 1.5)),
    ]
    return mt.Compose(transforms)


def foreground_slots(batch_size: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which patches of a batch are centred on the foreground (foreground oversampling).

    The last ``round(batch_size * fraction)`` patches, as nnU-Net (Isensee et al. 2021). Where
    that rounds to 0 although ``fraction > 0`` (batch 1, or batch 2 with a share below 0.25),
    each patch instead with probability ``fraction`` (nnU-Net v2's probabilistic
    oversampling), so a small batch does not silently lose the oversampling. Only in that
    case is ``rng`` drawn from, so larger batches sample exactly as before.

    Returns:
        bool ``(batch_size,)``.
    """
    n_fg = round(batch_size * fraction)
    if n_fg == 0 and fraction > 0:
        return rng.random(batch_size) < fraction
    return np.arange(batch_size) >= batch_size - n_fg


def sample_batch(volumes: list[Volume], config: TrainConfig, rng: np.random.Generator,
                 transform: mt.Compose | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of 2.5D patches with foreground oversampling.

    The patches :func:`foreground_slots` picks (the last ``round(batch_size *
    foreground_fraction)``) are centred (with a random shift of up to a quarter patch) on a
    random kidney voxel; the others on a random voxel (nnU-Net's scheme, Isensee et al. 2021).

    Returns:
        2D: ``(images (B, 2k+1, X, Y) float32, labels (B, 1, X, Y) int64)``;
        3D: ``(images (B, 1, X, Y, Z), labels (B, 1, X, Y, Z))``.
    """
    k = config.context_slices
    on_fg = foreground_slots(config.batch_size, config.foreground_fraction, rng)
    images, labels = [], []
    for b in range(config.batch_size):
        v = volumes[rng.integers(len(volumes))]
        nx, ny, nz = v.image.shape
        if on_fg[b] and len(v.fg):
            x, y, z = v.fg[rng.integers(len(v.fg))]
            jit = np.array(config.patch_size) // 4
            x, y = x + rng.integers(-jit[0], jit[0] + 1), y + rng.integers(-jit[1], jit[1] + 1)
            if config.spatial_dims == 3:
                z = z + rng.integers(-jit[2], jit[2] + 1)
        else:
            x, y, z = rng.integers(nx), rng.integers(ny), rng.integers(nz)
        fill = float(v.image.min())
        if config.spatial_dims == 3:
            img = crop_around(v.image[None], (x, y, z), config.patch_size, fill)
            lbl = crop_around(v.label[None], (x, y, z), config.patch_size, 0)
        else:
            zs = np.clip(np.arange(z - k, z + k + 1), 0, nz - 1)
            img = crop_around(np.moveaxis(v.image[:, :, zs], 2, 0), (x, y), config.patch_size, fill)
            lbl = crop_around(v.label[None, :, :, z], (x, y), config.patch_size, 0)
        if config.augment_flip_lr and rng.random() < 0.5:
            if config.merge_sides:  # one "kidney" class: a mirror changes no label
                img, lbl = np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(lbl[:, ::-1])
            else:
                img, lbl = flip_left_right(img, lbl, config.label_map)
        if transform is not None:
            out = transform({"image": img, "label": lbl})
            img, lbl = out["image"], out["label"]
        images.append(torch.as_tensor(np.asarray(img), dtype=torch.float32))
        labels.append(torch.as_tensor(np.asarray(lbl)).round().long())
    return torch.stack(images), torch.stack(labels)
