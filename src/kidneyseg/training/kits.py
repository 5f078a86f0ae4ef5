"""Training of ``kits-unet3d`` (seed 002): patch sampling with foreground oversampling,
augmentation, deep-supervised Dice + binary cross-entropy on the KiTS regions, SGD with
Nesterov momentum and poly decay, resumable checkpoints.

``kidneyseg train --pipeline kits-unet3d`` calls :func:`train_kits_unet3d`.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..arrays import crop_around
from ..datasets.layouts import Case, check_label_values
from ..errors import InputError
from ..io import read_image, to_canonical
from ..preprocess.resample import resample_volume
from ..specs.kits import REGIONS, KitsConfig, check_ct, normalise, regions_from_labels
from ..planning import Plan
from .checkpoint import restore_training_state, save_training_state

log = logging.getLogger(__name__)


@dataclass
class KitsVolume:
    """One preprocessed training case: RAS arrays on the plan's grid."""

    case_id: str
    image: np.ndarray  # float32, normalised
    labels: np.ndarray  # uint8 KiTS labels
    foreground: dict[int, np.ndarray]  # label value -> flat indices of its voxels


def read_ct_case(case: Case, kits_map: dict[int, int] | None = None):
    """Read one CT training case, check it and reorient image and labels to RAS.

    Args:
        case: a KiTS / nnU-Net case with an image.
        kits_map: KiTS class (1 kidney, 2 tumour, 3 cyst) -> stored label; default identity.

    Returns:
        ``(image, labels)``: canonical :class:`~kidneyseg.io.Image` values, the image float32
        in HU, the labels uint8 with the dataset's values mapped to KiTS classes (then
        ``kits_map``).

    Raises:
        InputError: no image (a mask-only case), image and mask grids differ, a label value
            outside the dataset's labels, or the checks of :func:`~kidneyseg.specs.kits.check_ct`.
    """
    if case.image is None:
        raise InputError(f"{case.label}: no image for this case (mask-only dataset)")
    img = read_image(case.image, dtype=np.float32)
    lab = read_image(case.label)
    if img.shape != lab.shape or not np.allclose(img.affine, lab.affine, atol=1e-3):
        raise InputError(f"{case.image}: image and {case.label.name} differ in shape or affine")
    check_ct(img)
    values = np.unique(np.asarray(lab.array))
    check_label_values(case, values)
    lut = np.zeros(int(max(values.max(), max(case.label_values, default=0))) + 1, np.uint8)
    for v, k in case.label_values.items():
        lut[v] = k if kits_map is None else kits_map.get(int(k), 0)
    ci, _ = to_canonical(img)
    cl, _ = to_canonical(lab.with_array(lut[np.asarray(lab.array).astype(np.int64)]))
    return ci, cl


def load_kits_volume(case: Case, plan: Plan) -> KitsVolume:
    """Read, check, reorient, resample (cubic / nearest) and normalise one case.

    Raises:
        InputError: no image (a mask-only case), image and mask grids differ, a label value
            outside the dataset's labels, or the checks of :func:`~kidneyseg.specs.kits.check_ct`.
    """
    ci, cl = read_ct_case(case)
    image = normalise(resample_volume(np.asarray(ci.array, np.float32), ci.spacing_mm, plan.target_spacing_mm, 3), plan)
    labels = resample_volume(np.asarray(cl.array, np.uint8), cl.spacing_mm, plan.target_spacing_mm, 0).astype(np.uint8)
    fg = {int(v): np.flatnonzero(labels == v) for v in np.unique(labels) if v != 0}
    return KitsVolume(case.case_id, image, labels, fg)


def sample_patch(vol: KitsVolume, patch: Sequence[int], rng: np.random.Generator, foreground: bool,
                 min_fraction: float = 1 / 3, tries: int = 10) -> tuple[np.ndarray, np.ndarray, float]:
    """One ``(image, labels, foreground_fraction)`` patch of size ``patch``.

    A foreground patch is centred (with a random shift of up to a quarter patch) on a random
    voxel of a random present class, nnU-Net's rule, so small tumours and cysts are drawn as
    often as kidneys; it is redrawn up to ``tries`` times until at least ``min_fraction`` of it
    is foreground (seed 002), and the draw with most foreground is kept otherwise. Other
    patches are uniform over the volume. Out-of-volume parts are filled with the image minimum
    and background.
    """
    shape = np.asarray(vol.labels.shape)
    size = np.asarray(patch)
    fill = float(vol.image.min())
    if not foreground or not vol.foreground:
        start = np.array([rng.integers(min(0, s - n), max(s - n, 0) + 1) for s, n in zip(shape, size)])
        centre = tuple(start + size // 2)
        lab = crop_around(vol.labels, centre, tuple(size), 0)
        return crop_around(vol.image, centre, tuple(size), fill), lab, float((lab > 0).mean())
    best = None
    for _ in range(max(tries, 1)):
        cls = list(vol.foreground)[int(rng.integers(len(vol.foreground)))]
        idx = vol.foreground[cls][int(rng.integers(vol.foreground[cls].size))]
        centre = tuple(np.array(np.unravel_index(idx, shape)) + rng.integers(-(size // 4), size // 4 + 1))
        lab = crop_around(vol.labels, centre, tuple(size), 0)
        frac = float((lab > 0).mean())
        if best is None or frac > best[2]:
            best = (centre, lab, frac)
        if frac >= min_fraction:
            break
    centre, lab, frac = best
    return crop_around(vol.image, centre, tuple(size), fill), lab, frac


def augmentation(config: KitsConfig):
    """MONAI dictionary transforms on ``{"image": (1, R, A, S), "label": (3, R, A, S)}``, each
    with probability ``config.augment_probability`` (seed 002: 0.4): mirroring along each
    axis, rotation about all axes, scaling (zoom), brightness (multiplicative), contrast
    (scaling about the mean), gamma. Region labels are KiTS's (no sides), so mirroring left-right
    changes no label."""
    import monai.transforms as mt

    p = config.augment_probability
    rot = np.deg2rad(config.rotation_deg)
    return mt.Compose([
        mt.RandFlipd(keys=["image", "label"], prob=p, spatial_axis=0),
        mt.RandFlipd(keys=["image", "label"], prob=p, spatial_axis=1),
        mt.RandFlipd(keys=["image", "label"], prob=p, spatial_axis=2),
        mt.RandRotated(keys=["image", "label"], prob=p, range_x=rot, range_y=rot, range_z=rot,
                       mode=("bilinear", "nearest"), padding_mode="border"),
        mt.RandZoomd(keys=["image", "label"], prob=p, min_zoom=1 - config.scale, max_zoom=1 + config.scale,
                     mode=("trilinear", "nearest"), padding_mode="edge", keep_size=True),
        mt.RandScaleIntensityd(keys=["image"], factors=0.25, prob=p),
        mt.RandScaleIntensityFixedMeand(keys=["image"], factors=0.25, prob=p),
        mt.RandAdjustContrastd(keys=["image"], prob=p, gamma=(0.7, 1.5), retain_stats=True),
    ])


class RegionLoss(torch.nn.Module):
    """Dice + binary cross-entropy over independent (overlapping) region channels.

    MONAI's ``DiceCELoss(sigmoid=True)`` applies a softmax cross-entropy across channels when
    there is more than one, which is wrong for nested KiTS regions (a tumour voxel is in all
    three); here the cross-entropy is ``torch.nn.BCEWithLogitsLoss`` per channel and the Dice
    part MONAI's ``DiceLoss(sigmoid=True)`` (``tests/pipelines/test_kits.py`` shows the difference).
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)
        self.bce = torch.nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target)


def _poly_lr(config: KitsConfig, it: int) -> float:
    return config.learning_rate * (1 - it / config.iterations) ** 0.9


def train_kits_unet3d(config: KitsConfig, cases: Sequence[Case], out_dir: str | Path, plan: Plan,
                      progress: bool = True) -> Path:
    """Train ``kits-unet3d`` and write a model folder; resumes from ``checkpoint.pt``.

    Args:
        config: training settings.
        cases: training cases (images and KiTS labels), e.g. from
            :func:`kidneyseg.datasets.layouts.kits_cases`.
        out_dir: model folder: ``config.json`` (config, plan, cases), ``model.pt``,
            ``training_summary.json``, ``checkpoint.pt`` (every ``checkpoint_every`` steps).
        plan: from :func:`kidneyseg.planning.make_plan` (or loaded and overridden).

    Returns:
        ``out_dir``.

    Raises:
        InputError: no case, a checkpoint made with another config or plan, bad cases
            (see :func:`load_kits_volume`).
    """
    from monai.losses import DeepSupervisionLoss
    from tqdm import tqdm

    from ..io.writers import atomic_path, write_json
    from ..models.store import resolve_device
    from ..models.unet import build_dynunet

    if not cases:
        raise InputError("train: no training cases")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"pipeline": "kits-unet3d", "config": config.to_dict(), "plan": plan.to_dict(),
             "cases": [c.case_id for c in cases], "label_map": {"1": "kidney", "2": "tumor", "3": "cyst"},
             "regions": list(REGIONS)}
    cfg_path = out / "config.json"
    ckpt_path = out / "checkpoint.pt"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if {k: old.get(k) for k in ("config", "plan", "cases")} != {k: json.loads(json.dumps(saved[k]))
                                                                      for k in ("config", "plan", "cases")}:
            raise InputError(f"{out}: holds a training with another config, plan or case list; use a new folder")
    write_json(saved, cfg_path)
    if (out / "model.pt").exists() and (out / "training_summary.json").exists():
        return out
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    t_load = time.perf_counter()
    volumes = [load_kits_volume(c, plan) for c in cases]
    load_s = time.perf_counter() - t_load
    net = build_dynunet(plan, 1, len(REGIONS)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=config.learning_rate, momentum=config.momentum, nesterov=True,
                          weight_decay=config.weight_decay)
    loss_fn = DeepSupervisionLoss(RegionLoss(), weight_mode="exp")  # weights 1, 1/2, 1/4: halving per level
    aug = augmentation(config)
    rng = np.random.default_rng(config.seed)
    start_it, history, train_s = restore_training_state(ckpt_path, net, opt, rng)
    fg_fracs = []
    bar = tqdm(range(start_it, config.iterations), initial=start_it, total=config.iterations, disable=not progress,
               desc="kits-unet3d", unit="it")
    t0 = time.perf_counter()
    net.train()
    for it in bar:
        aug.set_random_state(seed=int(rng.integers(2**31)))
        xs, ys = [], []
        for b in range(plan.batch_size):
            vol = volumes[int(rng.integers(len(volumes)))]
            fg = rng.random() < config.foreground_patches
            img, lab, frac = sample_patch(vol, plan.patch_size, rng, fg, config.min_foreground_fraction,
                                          config.foreground_tries)
            if fg:
                fg_fracs.append(frac)
            d = aug({"image": torch.from_numpy(img[None].copy()), "label": torch.from_numpy(regions_from_labels(lab))})
            xs.append(torch.as_tensor(d["image"]).float())
            ys.append(torch.as_tensor(d["label"]).float())
        x = torch.stack(xs).to(device)
        y = torch.stack(ys).to(device)
        for g in opt.param_groups:
            g["lr"] = _poly_lr(config, it)
        opt.zero_grad(set_to_none=True)
        out_t = net(x)
        heads = list(torch.unbind(out_t, dim=1)) if out_t.ndim == 6 else [out_t]
        loss = loss_fn(heads, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        opt.step()
        history.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(history[-20:]):.3f}")
        done = it + 1
        if done % config.checkpoint_every == 0 or done == config.iterations:
            save_training_state(ckpt_path, net, opt, rng, done, history, train_s + time.perf_counter() - t0)
    train_s += time.perf_counter() - t0
    with atomic_path(out / "model.pt") as tmp:
        torch.save(net.state_dict(), tmp)
    write_json({"iterations": config.iterations, "train_seconds": round(train_s, 1), "load_seconds": round(load_s, 1),
                "final_loss_mean_last_20": float(np.mean(history[-20:])), "loss_history": history,
                "foreground_patch_fraction_mean": float(np.mean(fg_fracs)) if fg_fracs else None,
                "machine": platform.machine(), "torch": torch.__version__, "device": str(device)},
               out / "training_summary.json")
    return out
