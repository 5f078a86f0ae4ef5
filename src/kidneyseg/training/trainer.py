"""Supervised training of the 2.5D kidney U-Net, resumable, with k-fold cross-validation."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from monai.losses import DiceCELoss
from tqdm import tqdm

from ..datasets import Case, list_cases
from ..specs.mr_unet import TrainConfig
from .checkpoint import read_checkpoint, save_checkpoint
from .data import augmentation, load_volume, read_case, sample_batch

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
LAST_ITERATE = "last_iterate"
"""Sub-folder of a model folder trained with weight averaging: the last iterate's model."""


def split_folds(case_ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """Patient-level k-fold split: ids shuffled with ``seed``, then dealt round-robin.

    Returns:
        ``folds`` disjoint lists covering every id (each patient in exactly one fold).
    """
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    return [[ids[i] for i in order[f::folds]] for f in range(folds)]


def select_cases(config: TrainConfig) -> tuple[list[Case], list[Case]]:
    """``(training cases, validation cases)`` for ``config.fold`` (validation empty when
    ``fold`` is None); ``exclude_cases`` are in neither."""
    cases = [c for c in list_cases(config.dataset, config.layout, config.label_map)
             if c.case_id not in set(config.exclude_cases)]
    extra = [c for folder, layout in config.extra_datasets for c in list_cases(folder, layout, config.label_map)
             if c.case_id not in set(config.exclude_cases)]
    if config.fold is None:
        return cases + extra, []
    held = set(split_folds([c.case_id for c in cases], config.folds, config.fold_seed)[config.fold])
    return [c for c in cases if c.case_id not in held] + extra, [c for c in cases if c.case_id in held]


def fit_normalisation(config: TrainConfig, cases: list[Case], read: list | None = None) -> TrainConfig:
    """Set ``body_clip_ratio`` from the training cases when the config asks for it.

    For ``normalisation="body_clip_zscore"`` or ``"body_ratio"`` with ``body_clip_ratio=None``: the 99.5th
    percentile of kidney intensity / body median, pooled over ``cases`` (their reference
    kidney voxels; :func:`kidneyseg.preprocess.normalise.foreground_body_ratio`). Only
    training cases are read, so a cross-validation fold never sees its held-out cases.

    Args:
        read: the cases' :func:`kidneyseg.training.data.read_case` results, if already read.

    Returns:
        ``config`` unchanged, or a copy with ``body_clip_ratio`` set (rounded to 3 decimals).
    """
    if not config.body_referenced or config.body_clip_ratio is not None:
        return config
    from ..preprocess.normalise import foreground_body_ratio

    def pairs():
        for i, case in enumerate(cases):
            image, ref = read[i] if read is not None else read_case(case)
            yield image.array, np.isin(np.asarray(ref.array).reshape(image.shape), list(case.label_values))

    return config.replace(body_clip_ratio=round(foreground_body_ratio(pairs()), 3))


def _poly_lr(config: TrainConfig, it: int) -> float:
    return config.learning_rate * (1 - it / config.iterations) ** 0.9


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True,
          validate: Callable[[Path, list[Case], str], list[dict]] | None = None) -> Path:
    """Train one model (one fold, or all cases) and save it as a model folder.

    Resumes from ``out_dir/checkpoint.pt`` when present (same config required). A
    ``body_clip_ratio`` left ``None`` is first fitted on the training cases
    (:func:`fit_normalisation`) and saved in ``config.json``. The
    batch of iteration ``i`` depends only on ``(seed, i)``, so a resumed run draws the
    same batches as an uninterrupted one.

    Args:
        config: the training configuration.
        out_dir: model folder to create (``config.json``, ``model.pt``, ``training_log.csv``,
            and for a fold ``validation.json``; with ``config.weight_average_from`` the
            averaged weights in ``model.pt`` and the last iterate in ``last_iterate/``).
        progress: show a tqdm progress bar.
        validate: for a fold, called as ``validate(out_dir, held_out_cases, device)`` once the
            model is saved; its rows go to ``training_summary.json`` under ``"validation"``
            (:func:`kidneyseg.validation.validate_mr` runs the full pipeline; training does not
            import pipelines). ``None``: no validation.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: a checkpoint in ``out_dir`` was made with another config.
    """
    from ..models.store import build_network, resolve_device, save_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    from . import distributed as ddp

    ctx, device = ddp.init_distributed(resolve_device(config.device))
    train_cases, val_cases = select_cases(config)
    t_start = time.perf_counter()
    progress = progress and ctx.is_main
    read = [None] * len(train_cases)
    if config.body_referenced and config.body_clip_ratio is None:
        read = [read_case(c) for c in train_cases]  # the fit and the loading share one read of each file
        config = fit_normalisation(config, train_cases, read)
    multiplane = config.recipe == "multiplane"
    if multiplane:
        from .multiplane import load_plane_volume, partial_dice_ce, sample_plane_batch

        volumes = [load_plane_volume(c, config, r if r is not None else read_case(c))
                   for c, r in tqdm(list(zip(train_cases, read)), desc="loading", disable=not progress)]
    else:
        volumes = [load_volume(c, config, r) for c, r in tqdm(list(zip(train_cases, read)), desc="loading", disable=not progress)]
    del read
    net = build_network(config).to(device)
    channels_last = device.type == "cpu" and config.spatial_dims == 2
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    if multiplane:
        def loss_fn(logits, target):
            return partial_dice_ce(logits, target, config.kidney_classes)
    else:
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    transform = augmentation(config)
    start, elapsed_before = 0, 0.0
    ckpt_path = out / CHECKPOINT
    ck = read_checkpoint(ckpt_path, config.to_dict())
    if ck is not None:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, elapsed_before = ck["iteration"], ck["seconds"]
        log.info("resuming from iteration %d", start)
    model = net  # the plain network: saved, validated
    averaged = None
    if config.weight_average_from is not None:
        from torch.optim.swa_utils import AveragedModel

        averaged = AveragedModel(model, use_buffers=True)
        if ck is not None:  # same config, so the checkpoint holds the average
            averaged.load_state_dict(ck["averaged_model"])
    average_start = config.iterations * (config.weight_average_from or 0.0)
    net = ddp.wrap(net, ctx, device)  # gradients averaged across processes under torchrun
    step_net = torch.compile(net) if config.compile else net  # same parameters; `model` is saved
    if ctx.is_main:
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log_path = out / "training_log.csv"
    new_log = not log_path.exists() or start == 0
    logf = open(log_path if ctx.is_main else os.devnull, "w" if new_log else "a", newline="")
    writer = csv.writer(logf)
    if new_log:
        writer.writerow(["iteration", "loss", "lr", "seconds"])
    net.train()
    t_loop = time.perf_counter()
    bar = tqdm(range(start, config.iterations), desc=f"train fold {config.fold}", disable=not progress,
               initial=start, total=config.iterations)
    running = None
    for it in bar:
        # one process keeps the historical stream; with several, each draws its own batches
        rng = np.random.default_rng([config.seed, it] if not ctx.enabled else [config.seed, it, ctx.rank])
        transform.set_random_state(seed=int(rng.integers(2**31)))
        x, y = (sample_plane_batch if multiplane else sample_batch)(volumes, config, rng, transform)
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        for g in opt.param_groups:
            g["lr"] = _poly_lr(config, it)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(step_net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        lv = float(loss.detach())
        running = lv if running is None else 0.95 * running + 0.05 * lv
        bar.set_postfix(loss=f"{running:.3f}")
        done = it + 1
        if averaged is not None and done > average_start and done % config.weight_average_every == 0:
            averaged.update_parameters(model)
        if ctx.is_main and (done % config.checkpoint_every == 0 or done == config.iterations):
            secs = elapsed_before + time.perf_counter() - t_loop
            writer.writerow([done, round(running, 5), _poly_lr(config, it), round(secs, 1)])
            logf.flush()
            state = {"config": config.to_dict(), "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "iteration": done, "seconds": secs}
            if averaged is not None:
                state["averaged_model"] = averaged.state_dict()
            save_checkpoint(ckpt_path, state)
    logf.close()
    train_seconds = elapsed_before + time.perf_counter() - t_loop
    in_sync = ddp.ranks_in_sync(net, ctx)
    ddp.shutdown(ctx)
    if not in_sync:
        raise RuntimeError("distributed training: the processes ended with different weights")
    if not ctx.is_main:
        return out
    net = model
    if averaged is not None:
        save_model(model.eval(), config, out / LAST_ITERATE)
        net = averaged.module
    net.eval()
    save_model(net, config, out)
    summary = {"train_seconds": round(train_seconds, 1), "load_seconds": round(t_loop - t_start, 1),
               "iterations": config.iterations, "train_cases": [c.case_id for c in train_cases],
               "world_size": ctx.world_size, "ranks_in_sync": in_sync}
    if averaged is not None:
        summary["weights_averaged"] = int(averaged.n_averaged)
    if val_cases and validate is not None:
        summary["validation"] = validate(out, val_cases, config.device)
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ckpt_path.unlink(missing_ok=True)
    return out


def summarise_cv(fold_dirs: list[Path], out_path: str | Path) -> dict:
    """Pool the validation rows of every fold: mean, std, min of Dice per kidney and the
    mean absolute total-kidney-volume error in %, and write them to ``out_path`` (JSON)."""
    rows = []
    for d in fold_dirs:
        s = json.loads((Path(d) / "training_summary.json").read_text())
        rows += [dict(r, fold=Path(d).name) for r in s.get("validation", [])]
    return summarise_cv_rows(rows, out_path)


def summarise_cv_rows(rows: list[dict], out_path: str | Path) -> dict:
    """:func:`summarise_cv` of given rows (each with ``fold``, ``case``, ``dice_*`` and the
    ``kidney_{right,left}_ml`` / ``_ref_ml`` volumes), e.g. one setting of
    ``benchmarks/mr_inference_settings.py``'s rows for a model without trainer validation."""
    out: dict[str, object] = {"n_cases": len(rows), "cases": rows}
    for key in [k for k in (rows[0] if rows else {}) if k.startswith("dice_")]:
        vals = np.array([r[key] for r in rows], dtype=float)
        out[key] = {"mean": round(float(vals.mean()), 4), "std": round(float(vals.std()), 4),
                    "min": round(float(vals.min()), 4), "median": round(float(np.median(vals)), 4)}
    if rows:
        pred = np.array([r["kidney_right_ml"] + r["kidney_left_ml"] for r in rows])
        ref = np.array([r["kidney_right_ref_ml"] + r["kidney_left_ref_ml"] for r in rows])
        err = 100 * (pred - ref) / ref
        out["total_volume_error_pct"] = {"mean_abs": round(float(np.abs(err).mean()), 2),
                                         "mean_signed": round(float(err.mean()), 2),
                                         "max_abs": round(float(np.abs(err).max()), 2)}
    Path(out_path).write_text(json.dumps(out, indent=2) + "\n")
    return out
