"""Seed and fold ensembles of MR U-Net model folders (``kidneyseg ensemble``): one folder whose network
averages the members' softmax. Written here, in the training layer, because it writes a model
folder; :mod:`kidneyseg.models.store` reads it (``ensemble.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..models.store import CONFIG, ENSEMBLE, WEIGHTS, sha256
from ..specs.mr_unet import TrainConfig
from .checkpoint import RUNTIME_FIELDS


def make_ensemble(members: list[str | Path], folder: str | Path) -> Path:
    """Write a model folder whose network averages the softmax of trained model folders.

    The members must share one training configuration except ``seed`` and ``fold`` (seed
    ensembles, and nnU-Net's ensemble of a cross-validation's folds; the same
    architecture and preprocessing, including the fitted ``body_clip_ratio``). ``folder``
    gets the first member's ``config.json`` (and ``inference.json``, if any), the weights as
    ``model.pt``, ``model_1.pt``, ... and ``ensemble.json`` (each member's source folder,
    seed and sha256).

    Raises:
        InputError: fewer than two members, a member that is not a model folder, or
            members whose configurations differ in more than the seed; ``folder`` existing
            and not empty. Files are staged and renamed into place together
            (:class:`kidneyseg.io.writers.AtomicOutputs`), so a failure leaves nothing behind.
    """
    import shutil

    from ..io.writers import AtomicOutputs

    srcs = [Path(m) for m in members]
    if len(srcs) < 2:
        raise InputError(f"ensemble: expected two or more model folders, got {len(srcs)}")
    configs = []
    from ..models.folder import ModelFolder

    for src in srcs:
        opened = ModelFolder.open(src, "mr-t2-unet", weights=(WEIGHTS,), accepts=("mr-t2-unet", "mr-multiprotocol-unet"))
        configs.append(opened.config(TrainConfig.from_dict))
    free = ("seed", "split_seed", "fold", "dataset", *RUNTIME_FIELDS)  # may differ between members
    first = {k: v for k, v in configs[0].to_dict().items() if k not in free}
    for src, cfg in zip(srcs[1:], configs[1:]):
        diff = sorted(k for k, v in cfg.to_dict().items() if k not in free and first[k] != v)
        if diff:
            raise InputError(f"{src}: configuration differs from {srcs[0]} in {', '.join(diff)} (only the seed and the fold may)")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder}: exists and is not empty")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with AtomicOutputs() as outs:  # every file renamed into place together, or none
            shutil.copyfile(srcs[0] / CONFIG, outs.stage(folder / CONFIG))
            if (srcs[0] / "inference.json").is_file():
                shutil.copyfile(srcs[0] / "inference.json", outs.stage(folder / "inference.json"))
            entries = []
            for i, (src, cfg) in enumerate(zip(srcs, configs)):
                name = WEIGHTS if i == 0 else f"model_{i}.pt"
                shutil.copyfile(src / WEIGHTS, outs.stage(folder / name))
                entries.append({"weights": name, "source": str(src), "seed": cfg.seed, "sha256": sha256(src / WEIGHTS)})
            outs.stage(folder / ENSEMBLE).write_text(json.dumps({"combine": "mean_softmax", "members": entries}, indent=2) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


__all__ = ["make_ensemble"]
