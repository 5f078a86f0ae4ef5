"""Held-out validation that runs a full pipeline on a model just trained: the layer above both
``pipelines/`` and ``training/`` (training saves a model; scoring it needs the pipeline's
post-processing, so the trainers take these as hooks or are driven from here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .datasets import Case
from .errors import InputError
from .io import read_image
from .metrics import dice
from .pipelines.em_unet3d import EMUNetPipeline
from .pipelines.mr_t2 import MRKidneyPipeline
from .specs.em_unet import EMUNetConfig
from .training.em_unet import TrainCase, train_em_unet
from .training.trainer import split_folds


def validate_mr(model_dir: str | Path, cases: list[Case], device: str = "auto") -> list[dict]:
    """Run the full ``mr-t2-unet`` pipeline (with post-processing) on held-out cases and
    score it against their reference on the original grid.

    Returns:
        One dict per case: Dice per kidney after post-processing, Dice of the network's raw
        kidney mask (both sides together; and per side for per-side networks), predicted
        and reference volumes (mL), seconds.
    """
    pipe = MRKidneyPipeline.load(str(model_dir), device)
    rows = []
    for case in cases:
        image = read_image(case.image, dtype=np.float32)
        ref = np.asarray(read_image(case.label).array).astype(np.int64)
        result = pipe.segment(image)
        row: dict[str, object] = {"case": case.case_id, "seconds": round(result.seconds, 2)}
        ref_any = np.isin(ref, list(case.label_values))
        row["dice_kidneys_network"] = round(dice(result.network_labels > 0, ref_any), 4)
        for v, name in pipe.label_map.items():
            src = [s for s, d in case.label_values.items() if d == v]
            ref_k = np.isin(ref, src)
            row[f"dice_{name}"] = round(dice(result.mask.array == v, ref_k), 4)
            if not pipe.bundle.config.merge_sides:  # the network's own sides, before post-processing
                row[f"dice_{name}_network"] = round(dice(result.network_labels == v, ref_k), 4)
            row[f"{name}_ml"] = round(result.volumes_ml[f"{name}_ml"], 2)
            row[f"{name}_ref_ml"] = round(float(ref_k.sum()) * image.voxel_volume_ml, 2)
        rows.append(row)
    return rows


def read_subjects(case_ids: list[str], subjects: str | Path | None = None, pattern: str | None = None) -> dict[str, str]:
    """Subject of each case: from a CSV with columns ``case`` and ``subject``, or from a regular
    expression whose first group is the subject (``"^(.+)_t[0-9]+$"`` makes ``m3_t1`` and
    ``m3_t2`` one subject, ``m3``), else each case its own subject.

    Raises:
        InputError: unreadable CSV, a case missing from it, a bad pattern, or a case the
            pattern does not match.
    """
    import csv
    import re

    if subjects is not None and pattern is not None:
        raise InputError("--subjects and --subject-pattern: give one of them")
    if subjects is not None:
        try:
            with open(subjects, newline="", encoding="utf-8") as f:
                table = {r["case"].strip(): r["subject"].strip() for r in csv.DictReader(f)}
        except (OSError, KeyError, AttributeError) as exc:
            raise InputError(f"--subjects {subjects}: expected a CSV with columns case and subject "
                             f"({exc.__class__.__name__}: {exc})") from None
        missing = [c for c in case_ids if c not in table]
        if missing:
            raise InputError(f"--subjects {subjects}: no subject for case(s) {', '.join(missing[:5])}")
        return {c: table[c] for c in case_ids}
    if pattern is not None:
        try:
            rule = re.compile(pattern)
        except re.error as exc:
            raise InputError(f"--subject-pattern {pattern!r}: not a regular expression ({exc})") from None
        out = {}
        for c in case_ids:
            m = rule.search(c)
            if m is None or not m.groups():
                raise InputError(f"--subject-pattern {pattern!r}: does not match case {c!r} (or has no group)")
            out[c] = m.group(1)
        return out
    return {c: c for c in case_ids}


def subject_folds(subjects: dict[str, str], folds: int | str, seed: int) -> list[list[str]]:
    """Cross-validation folds of case ids that never split a subject: ``"loso"`` holds out one
    subject (all of its scans) per fold; an int deals the subjects into that many folds
    (:func:`kidneyseg.training.trainer.split_folds`, ``seed``).

    Raises:
        InputError: fewer than 2 folds, or more folds than subjects.
    """
    ids = sorted(set(subjects.values()))
    k = len(ids) if folds == "loso" else int(folds)
    if not 2 <= k <= len(ids):
        raise InputError(f"--folds {folds}: expected 2 to {len(ids)} folds (or loso) for {len(ids)} subjects")
    groups = [[s] for s in ids] if folds == "loso" else split_folds(ids, k, seed)
    return [sorted(c for c, s in subjects.items() if s in set(g)) for g in groups]


def cross_validate_em(cases: list[TrainCase], config: EMUNetConfig, out_dir: str | Path, folds: int | str = "loso",
                      device: str = "auto", progress: bool = True, subjects: dict[str, str] | None = None) -> dict:
    """Cross-validation split by subject: ``folds="loso"`` leaves one subject out at a time
    (seed 000, section II.C: one animal, with all of its time points), an int makes that many
    subject folds (:func:`subject_folds`, seed ``config.seed``). ``subjects`` maps case id to
    subject (:func:`read_subjects`); without it each case is its own subject. Each fold trains
    into ``out_dir/fold_K`` (resumable) and scores its held-out cases; then the final model is
    trained on every case into ``out_dir``.

    Returns:
        The content of ``out_dir/cv_summary.json``: per held-out case DSC, VD
        (``|V_pred - V_ref| / V_ref``) and PPV on both kidneys as one mask, and their mean and std.

    Raises:
        InputError: fewer than 2 folds, or more folds than cases.
    """
    ids = [c.case_id for c in cases]
    groups = subject_folds(subjects or {i: i for i in ids}, folds, config.seed)
    out = Path(out_dir)
    per_case: dict[str, dict] = {}
    for f, held in enumerate(groups):
        model = train_em_unet([c for c in cases if c.case_id not in held], config, out / f"fold_{f}", device, progress)
        pipe = EMUNetPipeline.load(model, device)
        for case in (c for c in cases if c.case_id in held):
            pred = pipe.segment(case.image, case.localisation).mask.array > 0
            ref = np.asarray(case.kidneys, dtype=bool)
            tp = int(np.count_nonzero(pred & ref))
            per_case[case.case_id] = {
                "fold": f, "subject": (subjects or {}).get(case.case_id, case.case_id),
                "dsc": 2 * tp / max(int(pred.sum() + ref.sum()), 1),
                "vd": abs(int(pred.sum()) - int(ref.sum())) / max(int(ref.sum()), 1),
                "ppv": tp / int(pred.sum()) if pred.any() else 0.0}
    summary = {"folds": "loso" if folds == "loso" else len(groups), "cases": per_case,
               **{m: {"mean": float(np.mean([c[m] for c in per_case.values()])),
                      "std": float(np.std([c[m] for c in per_case.values()]))} for m in ("dsc", "vd", "ppv")}}
    train_em_unet(cases, config, out, device, progress)
    (out / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


__all__ = ["cross_validate_em", "read_subjects", "subject_folds", "validate_mr"]
