"""Training of ``c2f-cascade`` (seed 004): the five networks one after the other, each from
its own sampler, with resumable per-stage checkpoints.

* C (coarse): axial slices padded to a square and resized to ``coarse_size``; half of them
  hold kidney;
* A (correction): sagittal crops ``correction_size`` around the sagittal centroid of the
  reference kidneys (shifted by ``jitter_px``); half of the slices cross a kidney;
* F (fine): axial crops ``fine_size`` around one reference kidney's axial centroid (shifted),
  from the slices of its extent (+-2; a fifth from +-8);
* 3D FCN: patches centred on background, kidney and tumour, a third each (seed 004 section
  2.1, Kamnitsas et al.'s dense training), background drawn within the kidneys' box plus the
  inference margin; a case without tumour gives a kidney centre instead; cross-entropy;
* T (two channels): every axial slice with tumour and as many kidney slices without, as
  fine crops with the reference kidney mask as the second channel (section 2.2).

C, A and F optimise the Dice loss (seed 004, eq. 1; MONAI ``DiceLoss``), T Dice +
cross-entropy (MONAI ``DiceCELoss``; seed 004 does not say). Adam, constant learning rate.

``kidneyseg train --pipeline c2f-cascade`` calls :func:`train_c2f_cascade`.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..arrays import crop_around, padded_box
from ..datasets.layouts import Case
from ..errors import InputError
from ..preprocess.resample import resample_volume
from ..specs.c2f import STAGES, C2FConfig, build_network, normalise_ct, square_resize
from .checkpoint import restore_training_state, save_training_state
from .kits import read_ct_case


@dataclass
class C2FVolume:
    """One training case on the working grid (R, A, S)."""

    case_id: str
    image: np.ndarray  # float32 in [0, 1]
    labels: np.ndarray  # uint8: 0 background, 1 kidney (cysts included), 2 tumour
    components: list[tuple[tuple[int, int, int], int, int]]  # per kidney: centroid (R, A, S), first and last slice
    box: tuple[slice, slice, slice]  # kidneys' box plus the tumour margin

    @cached_property
    def class_voxels(self) -> dict[int, np.ndarray]:
        """Label value (1, 2) -> flat indices of its voxels."""
        return {c: np.flatnonzero(self.labels.ravel() == c) for c in (1, 2)}

    @cached_property
    def kidney_slices(self) -> np.ndarray:
        """Axial slice indices (S) holding kidney or tumour."""
        return np.flatnonzero((self.labels > 0).any((0, 1)))

    @cached_property
    def kidney_sagittal_slices(self) -> np.ndarray:
        """Sagittal slice indices (R) holding kidney or tumour."""
        return np.flatnonzero((self.labels > 0).any((1, 2)))

    @cached_property
    def tumour_slices(self) -> np.ndarray:
        """Axial slice indices holding tumour."""
        return np.flatnonzero((self.labels == 2).any((0, 1)))

    @cached_property
    def sagittal_centroid(self) -> tuple[int, int]:
        """(A, S) centroid of kidney and tumour voxels."""
        _, a, s = ndimage.center_of_mass(self.labels > 0)
        return int(round(a)), int(round(s))


def load_c2f_volume(case: Case, config: C2FConfig) -> C2FVolume:
    """Read, check, reorient and resample one case (cubic image, nearest labels).

    Raises:
        InputError: no image, image and mask grids differ, a label outside the dataset's,
            no kidney in the mask, or the checks of :func:`~kidneyseg.specs.kits.check_ct`.
    """
    ci, cl = read_ct_case(case, {1: 1, 2: 2, 3: 1})  # KiTS cyst -> kidney (seed 004 has kidney and tumour)
    image = normalise_ct(resample_volume(np.asarray(ci.array, np.float32), ci.spacing_mm, config.spacing_mm, 3), config)
    labels = resample_volume(np.asarray(cl.array, np.uint8), cl.spacing_mm, config.spacing_mm, 0).astype(np.uint8)
    comp, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        raise InputError(f"{case.label}: no kidney in this mask")
    sizes = np.bincount(comp.ravel())[1:]
    voxel_ml = float(np.prod(config.spacing_mm)) / 1000
    components = []
    for i in np.flatnonzero(sizes * voxel_ml >= min(config.kidney_threshold_ml, sizes.max() * voxel_ml)) + 1:
        m = comp == i
        zs = np.flatnonzero(m.any((0, 1)))
        components.append((tuple(int(round(c)) for c in ndimage.center_of_mass(m)), int(zs[0]), int(zs[-1])))
    return C2FVolume(case.case_id, image, labels, components, padded_box(labels > 0, config.tumour_box_margin))


def _jitter(rng: np.random.Generator, config: C2FConfig, n: int) -> np.ndarray:
    return np.round(rng.normal(0, config.jitter_px, n)).astype(int)


def sample_coarse(vols: Sequence[C2FVolume], config: C2FConfig, rng: np.random.Generator):
    """A batch for C: ``(B, 1, s, s)`` images and masks (kidney and tumour as foreground)."""
    xs, ys = [], []
    for _ in range(config.batch_2d):
        v = vols[int(rng.integers(len(vols)))]
        ks = v.kidney_slices if rng.random() < 0.5 else np.arange(v.labels.shape[2])
        k = int(ks[rng.integers(len(ks))])
        xs.append(square_resize(v.image[None, :, :, k], config.coarse_size))  # cases differ in shape
        ys.append(square_resize((v.labels[None, :, :, k] > 0).astype(np.float32), config.coarse_size, nearest=True))
    return torch.cat(xs), torch.cat(ys)


def sample_correction(vols: Sequence[C2FVolume], config: C2FConfig, rng: np.random.Generator):
    """A batch for A: sagittal crops ``(B, 1, A, S)`` around the kidneys' sagittal centroid."""
    xs, ys = [], []
    for _ in range(config.batch_2d):
        v = vols[int(rng.integers(len(vols)))]
        a, s = v.sagittal_centroid
        # the same shift in mm along A and S
        a += int(round(rng.normal(0, config.jitter_px)))
        s += int(round(rng.normal(0, config.jitter_px * config.spacing_mm[1] / config.spacing_mm[2])))
        rs = v.kidney_sagittal_slices if rng.random() < 0.5 else np.arange(v.labels.shape[0])
        i = int(rs[rng.integers(len(rs))])
        xs.append(crop_around(v.image[i], (a, s), config.correction_size, 0.0))
        ys.append(crop_around((v.labels[i] > 0).astype(np.float32), (a, s), config.correction_size, 0.0))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))[:, None]


def _fine_slice(v: C2FVolume, rng: np.random.Generator, config: C2FConfig):
    (r, a, _), z0, z1 = v.components[int(rng.integers(len(v.components)))]
    pad = 8 if rng.random() < 0.2 else 2
    k = int(np.clip(rng.integers(z0 - pad, z1 + pad + 1), 0, v.labels.shape[2] - 1))
    centre = tuple(np.array([r, a]) + _jitter(rng, config, 2))
    return centre, k


def sample_fine(vols: Sequence[C2FVolume], config: C2FConfig, rng: np.random.Generator):
    """A batch for F: axial crops ``(B, 1, f, f)`` around one kidney's axial centroid."""
    xs, ys = [], []
    size = (config.fine_size,) * 2
    for _ in range(config.batch_2d):
        v = vols[int(rng.integers(len(vols)))]
        centre, k = _fine_slice(v, rng, config)
        xs.append(crop_around(v.image[:, :, k], centre, size, 0.0))
        ys.append(crop_around((v.labels[:, :, k] > 0).astype(np.float32), centre, size, 0.0))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))[:, None]


def tumour3d_centre(v: C2FVolume, cls: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """A patch centre of class ``cls`` (0 background in the box, 1 kidney, 2 tumour); a case
    without tumour gives a kidney voxel for class 2."""
    if cls == 2 and not v.class_voxels[2].size:
        cls = 1
    if cls == 0:
        for _ in range(20):
            c = tuple(int(rng.integers(s.start, min(s.stop, n))) for s, n in zip(v.box, v.labels.shape))
            if v.labels[c] == 0:
                return c
        return c
    idx = v.class_voxels[cls]
    return tuple(int(i) for i in np.unravel_index(idx[rng.integers(idx.size)], v.labels.shape))


def sample_tumour3d(vols: Sequence[C2FVolume], config: C2FConfig, rng: np.random.Generator):
    """A batch for the 3D FCN: patches ``(B, 1, *tumour_patch)``, centres a third each on
    background, kidney and tumour; targets ``(B, 1, ...)`` tumour (int64 0/1)."""
    xs, ys = [], []
    for _ in range(config.batch_3d):
        v = vols[int(rng.integers(len(vols)))]
        c = tumour3d_centre(v, int(rng.integers(3)), rng)
        xs.append(crop_around(v.image, c, config.tumour_patch, 0.0))
        ys.append(crop_around((v.labels == 2).astype(np.int64), c, config.tumour_patch, 0))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))[:, None]


def sample_tumour2d(vols: Sequence[C2FVolume], config: C2FConfig, rng: np.random.Generator):
    """A batch for T: ``(B, 2, f, f)`` (CT, kidney mask) and tumour targets; half the slices hold
    tumour (when the cases have any), half are kidney slices without it."""
    xs, ys = [], []
    size = (config.fine_size,) * 2
    with_tumour = [v for v in vols if v.tumour_slices.size]
    for _ in range(config.batch_2d):
        if with_tumour and rng.random() < 0.5:
            v = with_tumour[int(rng.integers(len(with_tumour)))]
            k = int(v.tumour_slices[rng.integers(v.tumour_slices.size)])
            ra = np.argwhere(v.labels[:, :, k] == 2)
            r, a = ra[rng.integers(len(ra))]
            # centre on the kidney holding this tumour voxel: the nearest centroid in-plane
            centre = min((c for c, _, _ in v.components), key=lambda c: (c[0] - r) ** 2 + (c[1] - a) ** 2)[:2]
            centre = tuple(np.array(centre) + _jitter(rng, config, 2))
        else:
            v = vols[int(rng.integers(len(vols)))]
            centre, k = _fine_slice(v, rng, config)
        sl = v.labels[:, :, k]
        xs.append(np.stack([crop_around(v.image[:, :, k], centre, size, 0.0),
                            crop_around((sl > 0).astype(np.float32), centre, size, 0.0)]))
        ys.append(crop_around((sl == 2).astype(np.float32), centre, size, 0.0))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))[:, None]


SAMPLERS: dict[str, Callable] = {"coarse": sample_coarse, "correction": sample_correction, "fine": sample_fine,
                                 "tumour3d": sample_tumour3d, "tumour2d": sample_tumour2d}


def stage_loss(stage: str) -> torch.nn.Module:
    """Dice (C, A, F), cross-entropy (3D FCN), Dice + cross-entropy (T); MONAI losses on 2-class
    logits and integer-valued targets ``(B, 1, ...)``."""
    from monai.losses import DiceCELoss, DiceLoss

    if stage == "tumour3d":
        class _CE(torch.nn.Module):
            def forward(self, logits, target):
                return torch.nn.functional.cross_entropy(logits, target[:, 0].long())
        return _CE()
    if stage == "tumour2d":
        return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    return DiceLoss(to_onehot_y=True, softmax=True, batch=True)


def _train_stage(stage: str, vols: Sequence[C2FVolume], config: C2FConfig, out: Path, device: torch.device,
                 progress: bool) -> dict:
    """Train one network; ``<stage>.pt`` holds ``{"state", "summary"}``; resumes from
    ``checkpoint_<stage>.pt``. Returns the stage summary."""
    from tqdm import tqdm

    from ..io.writers import atomic_path

    final, ckpt_path = out / f"{stage}.pt", out / f"checkpoint_{stage}.pt"
    iterations = config.iterations_of(stage)
    if final.exists():
        return torch.load(final, map_location="cpu", weights_only=True)["summary"]
    torch.manual_seed(config.seed + STAGES.index(stage))
    net = build_network(stage, config).to(device)
    if stage != "tumour3d":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    loss_fn = stage_loss(stage)
    rng = np.random.default_rng([config.seed, STAGES.index(stage)])
    start, history, seconds = restore_training_state(ckpt_path, net, opt, rng)
    sampler = SAMPLERS[stage]
    net.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, iterations), initial=start, total=iterations, disable=not progress,
               desc=f"c2f {stage}", unit="it")
    for it in bar:
        x, y = sampler(vols, config, rng)
        x = x.to(device)
        if stage != "tumour3d":
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y.to(device))
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(history[-20:]):.3f}")
        done = it + 1
        if done % config.checkpoint_every == 0 or done == iterations:
            save_training_state(ckpt_path, net, opt, rng, done, history, seconds + time.perf_counter() - t0)
    seconds += time.perf_counter() - t0
    summary = {"iterations": iterations, "train_seconds": round(seconds, 1),
               "final_loss_mean_last_20": float(np.mean(history[-20:])), "loss_history": history}
    with atomic_path(final) as tmp:
        torch.save({"state": net.state_dict(), "summary": summary}, tmp)
    ckpt_path.unlink(missing_ok=True)
    return summary


def train_c2f_cascade(config: C2FConfig, cases: Sequence[Case], out_dir: str | Path, progress: bool = True) -> Path:
    """Train the five networks of ``c2f-cascade`` and write a model folder.

    Args:
        config: settings (:class:`~kidneyseg.specs.c2f.C2FConfig`).
        cases: KiTS-labelled cases (1 kidney, 2 tumour, 3 cyst), e.g. from
            :func:`kidneyseg.datasets.layouts.kits_cases`.
        out_dir: model folder: ``config.json``, ``<stage>.pt`` per network,
            ``training_summary.json``; ``checkpoint_<stage>.pt`` while a stage trains. A rerun
            skips finished stages and resumes the running one.

    Returns:
        ``out_dir``.

    Raises:
        InputError: no case, a folder holding another training, bad cases (see
            :func:`load_c2f_volume`).
    """
    from ..io.writers import write_json
    from ..models.store import resolve_device

    if not cases:
        raise InputError("train: no training cases")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"pipeline": "c2f-cascade", "config": config.to_dict(), "cases": [c.case_id for c in cases],
             "label_map": {str(k): v for k, v in {1: "kidney", 2: "tumor"}.items()}, "stages": list(STAGES)}
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if {k: old.get(k) for k in ("config", "cases")} != json.loads(json.dumps({k: saved[k] for k in ("config", "cases")})):
            raise InputError(f"{out}: holds a training with another config or case list; use a new folder")
    write_json(saved, cfg_path)
    if (out / "training_summary.json").exists():
        return out
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    t0 = time.perf_counter()
    vols = [load_c2f_volume(c, config) for c in cases]
    load_s = time.perf_counter() - t0
    stages = {s: _train_stage(s, vols, config, out, device, progress) for s in STAGES}
    write_json({"stages": {s: {k: v for k, v in d.items() if k != "loss_history"} for s, d in stages.items()},
                "train_seconds": round(sum(d["train_seconds"] for d in stages.values()), 1),
                "load_seconds": round(load_s, 1), "machine": platform.machine(), "torch": torch.__version__,
                "device": str(device)}, out / "training_summary.json")
    return out
