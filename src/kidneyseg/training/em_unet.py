"""Training of the ``em-unet3d`` pipeline (seed 000, sections II.B-II.E).

:func:`train_em_unet` takes training volumes with kidney masks, chooses the EM kidney
classes on them, optionally trains the through-plane super-resolution network on their
in-plane slices, crops every case with the *detected* box (as at inference), augments the
training crops only (histogram matching, 90-degree rotation, left-right and up-down flips),
and trains the small 3D U-Net with the Dice loss. A checkpoint is written after every
epoch; a rerun into the same folder resumes (same config required).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import Image, read_image, to_canonical
from ..localize.em import Box, box_from_mask, em_classes, fit_localiser, slice_axis_of
from ..specs.em_unet import (CONFIG, SR_WEIGHTS, WEIGHTS, EMUNetConfig, Prepared, build_network, find_box, input_size,
                             network_input, prepare)
from .checkpoint import read_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainCase:
    """One training volume.

    Attributes:
        case_id: identifier (cross-validation splits by it).
        image: network input volume (MD map, T2, ...).
        kidneys: bool array on ``image``'s grid (any non-zero reference label).
        localisation: optional localisation map on the same grid (FA).
    """

    case_id: str
    image: Image
    kidneys: np.ndarray
    localisation: Image | None = None


def chaos_train_cases(folder: str | Path, exclude: tuple[str, ...] = (), layout: str = "chaos") -> list[TrainCase]:
    """Training cases of a CHAOS folder (labels 2 right and 3 left kidney) or an nnU-Net raw
    folder (the labels named ``kidney_right``/``kidney_left``/``kidney`` in dataset.json);
    the kidney labels become one mask.

    Raises:
        InputError: see :func:`kidneyseg.datasets.list_cases`; an image/label shape mismatch.
    """
    from ..datasets.layouts import list_cases
    from ..labels import MR_KIDNEYS

    out = []
    for case in list_cases(folder, layout, MR_KIDNEYS):
        if case.case_id in exclude:
            continue
        img = read_image(case.image, dtype=np.float32)
        lbl = read_image(case.label)
        if lbl.shape != img.shape:
            raise InputError(f"{case.label}: shape {lbl.shape} differs from its image's {img.shape}")
        out.append(TrainCase(case.case_id, img, np.isin(lbl.array, [v for v, k in case.label_values.items() if k])))
    return out


def _prepare_case(case: TrainCase) -> tuple[Prepared, np.ndarray]:
    """The case on the working grid, and its kidney mask reoriented the same way."""
    prep = prepare(case.image, case.localisation)
    canon, _ = to_canonical(case.image.with_array(case.kidneys.astype(np.uint8)))
    return prep, np.moveaxis(canon.array, slice_axis_of(canon.spacing_mm), 2) > 0


def _augment(crop: np.ndarray, mask: np.ndarray, references: list[np.ndarray], config: EMUNetConfig,
             rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw crop -> list of (raw image, mask) variants: original and histogram-matched, each
    as is, rotated 90 degrees in-plane, flipped left-right and flipped up-down."""
    from skimage.exposure import match_histograms

    variants = [crop]
    if config.augment_histogram and references:
        ref = references[int(rng.integers(len(references)))]
        variants.append(match_histograms(crop, ref).astype(np.float32))
    out = []
    for v in variants:
        out.append((v, mask))
        if config.augment_geometric:
            out.append((np.rot90(v, 1, axes=(0, 1)).copy(), np.rot90(mask, 1, axes=(0, 1)).copy()))
            out.append((v[::-1].copy(), mask[::-1].copy()))
            out.append((v[:, ::-1].copy(), mask[:, ::-1].copy()))
    return out


def _resized_mask(mask: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    from ..preprocess.crop import crop_resize

    return crop_resize(mask.astype(np.float32), Box((0, 0, 0), mask.shape, 2), size) >= 0.5


def train_em_unet(cases: list[TrainCase], config: EMUNetConfig, out_dir: str | Path, device: str = "auto",
                  progress: bool = True) -> Path:
    """Train an ``em-unet3d`` model on ``cases`` into ``out_dir``.

    Writes ``model.pt``, ``config.json`` (with the chosen EM classes), ``super_resolution.pt``
    when ``config.super_resolution > 1``, and ``training_summary.json`` (localiser fit,
    box recall per case, seconds, final loss).

    Args:
        cases: :class:`TrainCase` list (at least 2).
        config: :class:`~kidneyseg.specs.em_unet.EMUNetConfig`.
        out_dir: model folder; a ``checkpoint.pt`` there is resumed.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        The model folder.

    Raises:
        InputError: fewer than 2 cases, a case without kidney voxels, a checkpoint made with
            another config, an unreadable histogram reference.
    """
    from monai.losses import DiceLoss
    from tqdm import tqdm

    from ..models.store import resolve_device

    if len(cases) < 2:
        raise InputError(f"em-unet3d training: {len(cases)} case(s); need at least 2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    prepared = []
    for c in cases:
        prep, kid = _prepare_case(c)
        if not kid.any():
            raise InputError(f"case {c.case_id}: the reference mask has no kidney voxel")
        prepared.append((c.case_id, prep, kid))
    summary: dict[str, object] = {"cases": [cid for cid, _, _ in prepared]}
    # 1. the EM kidney classes, chosen on the training masks
    ranks = {}
    if config.localiser == "em" and config.em_class_choice == "auto":
        for cid, prep, _ in prepared:
            ranks[cid] = em_classes(prep.loc, None, config.em)
        em, info = fit_localiser([ranks[c] for c, _, _ in prepared], [k for _, _, k in prepared],
                                 [p.spacing_mm for _, p, _ in prepared], config.em)
        config = replace(config, em=em)
        summary["localiser_fit"] = info
        log.info("EM kidney classes: ranks %s, %d components (%s)", em.class_ranks, em.keep_components, info)
    # 2. super-resolution from in-plane slices
    sr = None
    if config.super_resolution > 1:
        from ..preprocess.super_resolution import ThroughPlaneSR

        sr_path = out / SR_WEIGHTS
        if sr_path.is_file():
            sr = ThroughPlaneSR.from_state(torch.load(sr_path, map_location="cpu", weights_only=True))
        else:
            sr_cfg = replace(config.sr, factor=config.super_resolution)
            sr = ThroughPlaneSR.train([p.array for _, p, _ in prepared], [2] * len(prepared), sr_cfg, dev, progress)
            torch.save(sr.state(), sr_path)
    # 3. crops at the detected box (the reference box when detection fails)
    refs_raw = [read_image(p, dtype=np.float32).array for p in config.histogram_references]
    size = input_size(config)
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    recall = {}
    raw_crops = []
    for cid, prep, kid in prepared:
        box, _ = find_box(prep, config, ranks.get(cid))
        if box is None:
            box = box_from_mask(kid, 2, config.em.margin_px)
        recall[cid] = round(float(kid[box.slices].sum() / kid.sum()), 4)
        array, mask = prep.array, kid
        if sr is not None:
            array = sr.apply(array, 2, dev)
            mask = np.repeat(kid, config.super_resolution, axis=2)
            box = Box(box.lo, box.hi[:2] + (array.shape[2],), 2)
        raw_crops.append((cid, array[box.slices], mask[box.slices], box, array))
    summary["box_recall"] = recall
    for cid, crop, mask, box, array in raw_crops:
        references = refs_raw or [c for other, c, _, _, _ in raw_crops if other != cid]
        for img, msk in _augment(crop, mask, references, config, rng):
            whole = Box((0, 0, 0), img.shape, 2)
            samples.append((network_input(img, whole, config), _resized_mask(msk, size)))
    x_all = torch.from_numpy(np.stack([s[0] for s in samples])[:, None])
    y_all = torch.from_numpy(np.stack([s[1] for s in samples])[:, None].astype(np.float32))
    summary["training_crops"] = len(samples)
    # 4. the network
    net = build_network(config).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    loss_fn = DiceLoss(sigmoid=True, squared_pred=True, batch=False)  # V-Net Dice (seed 000, eq. 3)
    start = 0
    ckpt = out / CHECKPOINT
    state = read_checkpoint(ckpt, config.to_dict())
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["epoch"]
        torch.set_rng_state(state["torch_rng"])
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        log.info("resuming %s at epoch %d", out, start)
    n = len(samples)
    bar = tqdm(range(start, config.epochs), desc="em-unet3d", disable=not progress, initial=start, total=config.epochs)
    last = float("nan")
    for epoch in bar:
        net.train()
        order = rng.permutation(n)
        losses = []
        for i in range(0, n, config.batch_size):
            idx = torch.from_numpy(order[i:i + config.batch_size])
            x, y = x_all[idx].to(dev), y_all[idx].to(dev)
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        last = float(np.mean(losses))
        bar.set_postfix(dice_loss=f"{last:.3f}")
        save_checkpoint(ckpt, {"config": config.to_dict(), "model": net.state_dict(), "optimizer": opt.state_dict(),
                               "epoch": epoch + 1, "torch_rng": torch.get_rng_state(), "rng": rng.bit_generator.state,
                               "loss": last})
    if start >= config.epochs and state is not None:
        last = float(state.get("loss", float("nan")))
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / WEIGHTS)
    (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    summary.update({"final_dice_loss": last, "seconds": round(time.perf_counter() - t0, 1),
                    "device": str(dev), "torch": torch.__version__})
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return out


__all__ = ["TrainCase", "chaos_train_cases", "train_em_unet"]
