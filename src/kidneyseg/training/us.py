"""Training of seed 003's ultrasound ensemble (:class:`~kidneyseg.models.us_ensemble.TripleConcatenated`).

Two schedules (``USTrainConfig.mode``):

* ``"staged"``: each member is trained alone (``epochs``), then the members are frozen and
  only the fusion convolution is trained (``fusion_epochs``).
* ``"end-to-end"``: the fused model is trained as one network (``epochs``), the loss on the
  fused output plus the mean of the members' losses (so each member stays a usable
  segmenter and its score can be reported).

Adam with learning rate 1e-3 (seed 003 section 2); loss Dice + binary cross-entropy
(MONAI ``DiceCELoss``; the paper does not name its loss). A checkpoint is written after every
epoch and a killed run resumes from it with the same batches (the order of epoch ``e`` is
drawn from ``(seed, stage, e)``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.us_ensemble import TripleConcatenated
from ..preprocess.ultrasound import Letterbox, speckle_augment
from ..specs.us import USSample, USTrainConfig, score_samples
from .checkpoint import read_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def _prepare(samples: Sequence[USSample], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Letterbox every sample onto the canvas once: images, masks, sectors ``(N, H, W)``."""
    xs, ys, ss = [], [], []
    for s in samples:
        if s.image.shape != s.mask.shape:
            raise InputError(f"{s.name or 'sample'}: image {s.image.shape} and mask {s.mask.shape} differ in shape")
        lb = Letterbox(tuple(s.image.shape), size)
        sector = s.sector if s.sector is not None else np.ones(s.image.shape, dtype=bool)
        xs.append(lb.forward(s.image.astype(np.float32), order=1))
        ys.append(lb.forward(s.mask.astype(np.uint8), order=0))
        ss.append(lb.forward(sector.astype(np.uint8), order=0).astype(bool))
    return np.stack(xs), np.stack(ys), np.stack(ss)


def _stage_seed(stage: str) -> int:
    """A stable integer per stage name (``hash`` of a str changes between processes)."""
    import zlib

    return zlib.crc32(stage.encode())


def _batches(n: int, cfg: USTrainConfig, stage: str, epoch: int):
    """Batch indices and a generator for their augmentation, from ``(seed, stage, epoch)``."""
    key = [cfg.seed, _stage_seed(stage), epoch]
    order = np.random.default_rng(key).permutation(n)
    for i in range(0, n, cfg.batch_size):
        yield order[i:i + cfg.batch_size], np.random.default_rng(key + [i])


def _batch(x, y, s, idx, rng, cfg: USTrainConfig, device):
    xb, yb = x[idx].copy(), y[idx].copy()
    if cfg.augment:
        for j in range(len(idx)):
            flipped = rng.random() < 0.5
            if flipped:
                xb[j], yb[j] = xb[j][:, ::-1], yb[j][:, ::-1]
            xb[j] = speckle_augment(xb[j], rng, sector=s[idx[j]][:, ::-1] if flipped else s[idx[j]])
    xt = torch.from_numpy(np.ascontiguousarray(xb))[:, None].to(device)
    yt = torch.from_numpy(np.ascontiguousarray(yb))[:, None].float().to(device)
    return xt, yt


def train_us_ensemble(config: USTrainConfig, train: Sequence[USSample], out_dir: str | Path,
                      validation: Sequence[USSample] = (), progress: bool = True) -> Path:
    """Train the ensemble and save a model folder (``config.json``, ``model.pt``,
    ``training_summary.json``).

    Args:
        config: the configuration.
        train: training samples (any sizes; letterboxed to ``config.image_size``).
        out_dir: the model folder; a ``checkpoint.pt`` in it is resumed (same config).
        validation: samples scored (Dice per member and fused) after training.
        progress: tqdm bars.

    Raises:
        InputError: no training samples, or an image and mask of different shapes.
        ValueError: the checkpoint in ``out_dir`` was made with another config.
    """
    from monai.losses import DiceCELoss

    from ..models.store import resolve_device

    if not train:
        raise InputError("training set: no samples")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    x, y, s = _prepare(train, config.image_size)
    model = TripleConcatenated(config.members, encoder_weights=config.encoder_weights).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)

    stages: list[tuple[str, int]] = []
    if config.mode == "staged":
        stages += [(f"member:{m}", config.epochs) for m in config.members]
        if config.fusion_epochs and len(config.members) > 1:
            stages.append(("fusion", config.fusion_epochs))
    else:
        stages.append(("end-to-end", config.epochs))

    ckpt_path = out / CHECKPOINT
    done: dict[str, int] = {}
    seconds: dict[str, float] = {}
    opt_state = None
    ck = read_checkpoint(ckpt_path, config.to_dict())
    if ck is not None:
        model.load_state_dict(ck["model"])
        done, seconds, opt_state = ck["done"], ck["seconds"], ck["optimizer"]
        log.info("resuming: %s", done)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    history: list[dict] = []

    for stage, epochs in stages:
        start = done.get(stage, 0)
        if start >= epochs:
            continue
        params, forward = _stage(model, stage)
        opt = torch.optim.Adam(params, lr=config.learning_rate)
        if opt_state is not None and opt_state[0] == stage:
            opt.load_state_dict(opt_state[1])
        opt_state = None
        t0 = time.perf_counter()
        bar = tqdm(range(start, epochs), desc=stage, disable=not progress, initial=start, total=epochs)
        for epoch in bar:
            model.train()
            if stage == "fusion":
                model.members.eval()  # frozen: batch-norm statistics stay as trained
            losses = []
            for idx, rng in _batches(len(x), config, stage, epoch):
                xb, yb = _batch(x, y, s, idx, rng, config, device)
                if device.type == "cpu":
                    xb = xb.contiguous(memory_format=torch.channels_last)
                opt.zero_grad(set_to_none=True)
                loss = forward(xb, yb, loss_fn)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            mean_loss = float(np.mean(losses))
            bar.set_postfix(loss=f"{mean_loss:.3f}")
            history.append({"stage": stage, "epoch": epoch + 1, "loss": round(mean_loss, 5)})
            done[stage] = epoch + 1
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            save_checkpoint(ckpt_path, {"config": config.to_dict(), "model": model.state_dict(), "done": done,
                                        "seconds": seconds, "optimizer": (stage, opt.state_dict())})

    model.eval()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / "model.pt")
    summary: dict = {"train_seconds": {k: round(v, 1) for k, v in seconds.items()}, "epochs_done": done,
                     "train_images": len(train), "history_tail": history[-5:]}
    if validation:
        eval_model = model.to(memory_format=torch.channels_last) if device.type == "cpu" else model
        summary["validation_dice"] = score_samples(eval_model, config.image_size, validation, device)
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ckpt_path.unlink(missing_ok=True)
    return out


def _stage(model: TripleConcatenated, stage: str):
    """Trainable parameters and the loss function of one stage."""
    if stage.startswith("member:"):
        name = stage.split(":", 1)[1]
        net = model.members[name]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in net.parameters():
            p.requires_grad_(True)
        return list(net.parameters()), lambda xb, yb, lf: lf(net(xb), yb)
    if stage == "fusion":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.fusion.parameters():
            p.requires_grad_(True)

        def fusion_loss(xb, yb, lf):
            with torch.no_grad():
                logits = model.member_logits(xb)
            return lf(model.fuse(logits), yb)

        return list(model.fusion.parameters()), fusion_loss
    for p in model.parameters():
        p.requires_grad_(True)

    def joint_loss(xb, yb, lf):
        logits = model.member_logits(xb)
        return lf(model.fuse(logits), yb) + sum(lf(m, yb) for m in logits) / len(logits)

    return list(model.parameters()), joint_loss


def kidneyus_samples(dataset, names: Sequence[str], reference: str = "sonographer1") -> list[USSample]:
    """Training samples from Open Kidney US cases that have an image.

    Args:
        dataset: a :class:`~kidneyseg.datasets.kidneyus.KidneyUSDataset` loaded with an
            image folder.
        names: file names to use (e.g. one part of :meth:`KidneyUSDataset.split`); names
            without an image are skipped.
        reference: which capsule mask is the target (``sonographer1``, ``sonographer2``,
            ``intersection``, ``union``, ``staple``).

    Raises:
        InputError: an image whose size differs from its masks'.
    """
    from ..preprocess.ultrasound import read_us_frame, scan_sector

    out = []
    for name in names:
        case = dataset.cases[name]
        if case.image_path is None:
            continue
        frame = read_us_frame(case.image_path)
        mask = case.capsule(reference)
        if mask.shape != frame.array.shape:
            raise InputError(f"{case.image_path}: image is {frame.array.shape[0]} x {frame.array.shape[1]} px but its "
                             f"masks are {mask.shape[0]} x {mask.shape[1]}")
        out.append(USSample(frame.array, mask, scan_sector(frame.array), name))
    return out


def train_on_kidneyus(config: USTrainConfig, labels_dir: str | Path, images_dir: str | Path, out_dir: str | Path,
                      reference: str = "sonographer1", split_seed: int = 0, progress: bool = True) -> Path:
    """Train on the Open Kidney Ultrasound Data Set: the seeded patient-level split of
    :meth:`~kidneyseg.datasets.kidneyus.KidneyUSDataset.split` (seed 003's 295 / 60 / 159
    proportions); training on ``train``, Dice reported on ``validation``; the ``test`` names
    are written to ``split.json`` in the model folder and never read here.

    Raises:
        InputError: no annotated image found in ``images_dir``.
    """
    from ..datasets.kidneyus import KidneyUSDataset

    ds = KidneyUSDataset.load(labels_dir, images_dir)
    if len(ds.missing_images) == len(ds.cases):
        raise InputError(f"{images_dir}: none of the {len(ds.cases)} annotated images is in this folder")
    if ds.missing_images:
        log.warning("%d annotated images are not in %s; training without them", len(ds.missing_images), images_dir)
    split = ds.split(split_seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps({"seed": split_seed, "reference": reference, **split}, indent=2) + "\n")
    train = kidneyus_samples(ds, split["train"], reference)
    val = kidneyus_samples(ds, split["validation"], reference)
    return train_us_ensemble(config, train, out, validation=val, progress=progress)
__all__ = ["USSample", "USTrainConfig", "kidneyus_samples", "train_on_kidneyus", "train_us_ensemble"]
