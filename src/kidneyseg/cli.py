"""The ``kidneyseg`` command. Every subcommand calls the Python API (:mod:`kidneyseg.api`).

Exit status: 0 success; 2 bad input (one line on stderr naming the file and the
problem); 1 an unexpected internal error (one line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .errors import InputError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]|gpu[:N]|mps",
                   help="where to run (default: auto: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info messages")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="a line per stage of each case (read, load model, segment, write) with seconds, "
                        "also when the output is not a terminal")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def _count(minimum: int):
    """argparse type: an integer >= ``minimum`` (``--threads -1`` is a usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _nonempty_path(text: str) -> str:
    """argparse type: a path that is not empty (``-o ""`` would write into the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``kidneyseg`` parser: one subparser per command (the ``_add_*_parser`` functions)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="kidneyseg", description="Kidney segmentation and volumetry.")
    parser.add_argument("--version", action="version", version=f"kidneyseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_segment_parser, _add_train_parser, _add_evaluate_parser, _add_dti_parser, _add_plan_parser,
                _add_small_parsers):
        add(sub)
    return parser


def _add_segment_parser(sub) -> None:
    """``kidneyseg segment``: inputs, outputs, pipeline and model, inference and cohort options."""
    s = sub.add_parser("segment", help="segment kidneys in NIfTI files, DICOM folders or PAR/REC files "
                                       "(2D ultrasound frames with --pipeline us-ensemble)")
    s.add_argument("inputs", nargs="*", help="image files, folders of NIfTI files, or DICOM series folders")
    s.add_argument("-i", "--input", action="append", default=None, dest="more_inputs", metavar="PATH",
                   help="an input given as an option (TotalSegmentator's habit), repeatable; joins the positional ones")
    s.add_argument("--manifest", default=None,
                   help="cohort CSV (columns path, optional case): a status table is kept and a re-run skips finished cases")
    s.add_argument("--resume", action="store_true",
                   help="keep status.csv and skip cases an earlier run finished (outputs checked by SHA-256)")
    s.add_argument("-o", "--output", required=True, type=_nonempty_path, help="output folder (created if missing)")
    s.add_argument("--pipeline", default=None, help="registered pipeline (see list-models); default mr-auto (the shipped MR models, chosen per "
                   "scan), or mr-t2-unet with --model")
    s.add_argument("--model", default=None, help="local model folder to use instead of the shipped one")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument("--no-overlay", action="store_true", help="skip the overlay PNGs")
    s.add_argument("--keep-all-components", action="store_true",
                   help="do not reduce the mask to the largest component per kidney")
    s.add_argument("--allow-ct", action="store_true",
                   help="MR pipelines: segment an image that looks like CT anyway (refused by default)")
    s.add_argument("--no-tta", "--fast", action="store_true",
                   help="one plain network pass instead of the model's test-time augmentation (faster; --fast "
                        "is the same option: unlike TotalSegmentator's --fast it keeps the model and resolution)")
    s.add_argument("--save-probabilities", "--save_probabilities", action="store_true",
                   help="MR U-Net pipelines: also write <case>_prob.nii.gz, the kidney probability (float32, 0-1) "
                        "on the input's grid (nnU-Net's habit)")
    s.add_argument("--preset", default=None, metavar="NAME",
                   help="a named set of the pipeline's settings: 'paper' for unsupervised-cluster (seed 001's "
                        "values: native resolution, float32, no clamp to the seed)")
    s.add_argument("--threads", type=_count(0), default=0, help="CPU threads for torch and SimpleITK (0: their defaults)")
    s.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local (default) or ray: cases spread over Ray workers, one model load each")
    s.add_argument("--address", default=None, help="--engine ray: cluster address (default: start a local instance)")
    s.add_argument("--workers", type=_count(1), default=2, help="--engine ray: number of workers (default 2)")
    s.add_argument("--report", action="store_true",
                   help="also write report.html: three-plane pictures, volume table with QC flags, cohort plot")
    s.add_argument("--series", default=None, metavar="UID|largest|description:TEXT",
                   help="which series of a DICOM folder holding several")
    s.add_argument("--volume", type=_count(1), default=None, metavar="N",
                   help="volume N (from 1) of a 4D NIfTI input, or image set N of a DICOM series holding several "
                        "images per slice position (echoes, magnitude/phase, inversion times); default: 4D files are "
                        "refused, a multi-echo series gives the magnitude of its first echo")
    s.add_argument("--output-type", default="nifti", choices=["nifti", "dicom-seg", "both", "rtstruct"],
                   help="mask format: NIfTI, a DICOM SEG referencing the input series (DICOM input only), both, or an RT Structure Set (DICOM input only; pip install kidneyseg[rtstruct])")
    s.add_argument("--pixel-spacing-mm", type=float, default=None,
                   help="us-ensemble: pixel spacing in mm for the kidney area in mm^2 (DICOM frames carry their own)")
    s.add_argument("--secondary", default=None,
                   help="unsupervised-cluster: a second sequence of the same exam (one input only), registered "
                        "and fused as a channel; em-unet3d: the localisation map (FA) on the input's grid")
    _add_common(s)


def _add_train_parser(sub) -> None:
    """``kidneyseg train --pipeline NAME``: the earlier form, a fixed set of flags (``kidneyseg train METHOD`` is :mod:`kidneyseg.cli_train`)."""
    t = sub.add_parser("train", help="train a kidney model: kidneyseg train METHOD --help lists every flag",
                       epilog="kidneyseg train METHOD ... (METHOD: mr-t2-unet, mr-multiprotocol-unet, us-ensemble, "
                              "em-unet3d, kits-unet3d, c2f-cascade) takes every field of the method's config as a "
                              "flag and refuses others; the --pipeline form below is the earlier, fixed set of flags.")
    t.add_argument("--dataset", required=True, help="dataset folder")
    t.add_argument("--layout", default=None, choices=["chaos", "nnunet", "kits"],
                   help="dataset layout (default chaos; kits-unet3d, c2f-cascade: kits)")
    t.add_argument("-o", "--output", required=True, help="model folder (a fold adds fold_N/ inside)")
    t.add_argument("--config", default=None, help="JSON file with TrainConfig fields (flags override it)")
    from .cli_train import add_fold_flags

    add_fold_flags(t)
    t.add_argument("--folds", type=int, default=None)
    t.add_argument("--iterations", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--patch-size", type=int, nargs=2, default=None)
    t.add_argument("--learning-rate", type=float, default=None)
    t.add_argument("--context-slices", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--exclude", nargs="*", default=None, help="case ids never used for training")
    t.add_argument("--flip-lr", action="store_true", default=None, help="mirror left-right (labels swapped with it)")
    t.add_argument("--threads", type=_count(0), default=None)
    t.add_argument("--pipeline", default="mr-t2-unet", choices=["mr-t2-unet", "us-ensemble", "em-unet3d", "kits-unet3d", "c2f-cascade"],
                   help="what to train (us-ensemble: --dataset is an Open Kidney US label folder, --images its images; "
                        "em-unet3d: a CHAOS or nnU-Net folder, one kidney mask per case)")
    t.add_argument("--localiser", default=None, choices=["em", "body", "none"],
                   help="em-unet3d: crop by EM classes (default), by the body's largest component, or none")
    t.add_argument("--super-resolution", type=int, default=None, metavar="FACTOR",
                   help="em-unet3d: through-plane super-resolution factor (seed 000: 5; default 1 = off)")
    t.add_argument("--histogram-reference", nargs="+", default=None, metavar="IMAGE",
                   help="em-unet3d: images whose histograms training crops are matched to (augmentation)")
    t.add_argument("--plan", default=None, help="kits-unet3d: plan JSON from kidneyseg plan (default: plan the dataset now)")
    t.add_argument("--memory-gb", type=float, default=8.0, help="kits-unet3d: memory budget when planning now")
    t.add_argument("--images", default=None, help="us-ensemble: folder of the Open Kidney US images")
    t.add_argument("--reference", default="sonographer1",
                   choices=["sonographer1", "sonographer2", "intersection", "union", "staple"],
                   help="us-ensemble: which capsule annotation is the target")
    t.add_argument("--epochs", type=int, default=None,
                   help="us-ensemble: epochs per member (seed 003: 100); em-unet3d: epochs (default 60)")
    t.add_argument("--mode", default=None, choices=["staged", "end-to-end"], help="us-ensemble: training schedule")
    t.add_argument("--encoder-weights", nargs="+", default=None, metavar="MEMBER=PATH",
                   help="us-ensemble: local ImageNet encoder weights per member (nothing is downloaded)")
    _add_common(t)


def _add_evaluate_parser(sub) -> None:
    """``kidneyseg evaluate``: masks against reference masks."""
    e = sub.add_parser("evaluate", help="score predicted masks against reference masks (Dice, HD95, surface Dice, ...)")
    e.add_argument("pred", help="predicted mask (NIfTI, or PNG for 2D) or a folder of them")
    e.add_argument("ref", help="reference mask or folder (also KiTS case_*/segmentation.nii.gz)")
    e.add_argument("-o", "--output", required=True, help="output folder for metrics.csv, summary.csv, metrics.json, plots")
    e.add_argument("--regions", default="labels", choices=["labels", "kits", "mr-kidneys", "foreground"],
                   help="labels: each label value; kits: kidney_and_masses, masses, tumor (KiTS23 tolerances); "
                        "mr-kidneys: kidney_right, kidney_left, kidneys; foreground: all labels as one")
    e.add_argument("--labels", type=int, nargs="+", default=None, help="label values to evaluate (with --regions labels)")
    e.add_argument("--label-map", default=None, choices=["mr_kidneys", "kits", "chaos_mr"],
                   help="name label regions after this label map")
    e.add_argument("--tolerance-mm", type=float, default=1.0,
                   help="surface Dice tolerance in mm (default 1.0; the kits regions use the KiTS23 values)")
    e.add_argument("--pixel-spacing-mm", type=float, default=None,
                   help="pixel spacing of PNG masks (2D ultrasound); without it distances and areas are in pixels")
    e.add_argument("--no-plots", action="store_true", help="skip the violin plots")
    e.add_argument("--report", action="store_true", help="also write report.html (summary table and plots embedded)")
    e.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    e.add_argument("--workers", type=_count(1), default=1, help="cases evaluated in parallel (processes)")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--debug", action="store_true")


def _add_dti_parser(sub) -> None:
    """``kidneyseg dti``: diffusion tensor maps."""
    dt = sub.add_parser("dti", help="diffusion tensor maps (FA, MD, AD, RD, tensor elements) from a DWI series")
    dt.add_argument("dwi", help="4D NIfTI diffusion-weighted series")
    dt.add_argument("--bval", required=True, help="FSL bval file (s/mm^2)")
    dt.add_argument("--bvec", required=True, help="FSL bvec file")
    dt.add_argument("-o", "--output", required=True, help="output folder for fa/md/ad/rd/tensor/mask .nii.gz and dti.json")
    dt.add_argument("--mask", default="auto", help="auto (dipy median_otsu body mask), none, or a mask NIfTI")
    dt.add_argument("--fit-method", default="WLS", choices=["WLS", "OLS", "NLLS", "RT"], help="dipy TensorModel fit")
    dt.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    dt.add_argument("--quiet", action="store_true")
    dt.add_argument("--debug", action="store_true")


def _add_plan_parser(sub) -> None:
    """``kidneyseg plan``: a CT training plan."""
    pl = sub.add_parser("plan", help="fingerprint a CT training set and write a training plan (nnU-Net style)")
    pl.add_argument("dataset", help="KiTS folder (case_XXXXX/imaging.nii.gz + segmentation.nii.gz) or nnU-Net raw folder")
    pl.add_argument("-o", "--output", required=True, help="plan JSON to write")
    pl.add_argument("--layout", default="kits", choices=["kits", "nnunet", "chaos"])
    pl.add_argument("--memory-gb", type=float, default=8.0, help="memory one training step may use (default 8)")
    pl.add_argument("--target-spacing-mm", type=float, nargs=3, default=None, metavar=("R", "A", "S"),
                    help="override the median-spacing rule, e.g. 1.99 1.99 1.99 (seed 002)")
    pl.add_argument("--normalisation", default=None, choices=["ct_clip_zscore", "case_percentile"],
                    help="default ct_clip_zscore (nnU-Net's dataset-level CT normalisation)")
    pl.add_argument("--preset", default=None, choices=["paper"],
                    help="paper: seed 002's settings (per-case percentile normalisation, 1.99 mm isotropic, "
                         "32 base filters); other flags override them")
    pl.add_argument("--masks-only", action="store_true", help="plan from the masks' geometry (no images present)")
    pl.add_argument("--overwrite", action="store_true")
    pl.add_argument("--quiet", action="store_true")
    pl.add_argument("--debug", action="store_true")


def _add_small_parsers(sub) -> None:
    """``kidneyseg ensemble``, ``list-models``, ``info`` and ``demo``."""
    en = sub.add_parser("ensemble", help="make one mr-t2-unet model folder that averages the softmax of "
                                         "model folders trained with different seeds")
    en.add_argument("models", nargs="+", help="two or more model folders (config.json + model.pt)")
    en.add_argument("-o", "--output", required=True, help="new model folder (use it with segment --model)")
    en.add_argument("--quiet", action="store_true")
    en.add_argument("--debug", action="store_true")

    lm = sub.add_parser("list-models", help="list registered pipelines and the shipped model")
    lm.add_argument("--debug", action="store_true")
    lm.add_argument("--quiet", action="store_true")

    i = sub.add_parser("info", help="print an image's shape, spacing, orientation, intensity range and the pipeline to use")
    i.add_argument("input")
    i.add_argument("--debug", action="store_true")
    i.add_argument("--quiet", action="store_true")

    d = sub.add_parser("demo", help="segment the bundled CHAOS example and score it against its expert mask")
    d.add_argument("-o", "--output", default="demo_output")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("--threads", type=int, default=0)
    _add_common(d)


def _cmd_segment(args) -> int:
    from .api import run_segment
    from .pipelines import default_pipeline
    from .runner import SegmentRequest

    summary = run_segment(SegmentRequest(
        out_dir=args.output, inputs=tuple(args.inputs or ()) + tuple(args.more_inputs or ()), manifest=args.manifest,
        pipeline=args.pipeline or default_pipeline(args.model), model=args.model, device=args.device, overwrite=args.overwrite,
        overlay=not args.no_overlay, keep_largest=not args.keep_all_components, progress=not args.quiet,
        threads=args.threads, secondary=args.secondary, pixel_spacing_mm=args.pixel_spacing_mm,
        output_type=args.output_type, series=args.series, volume=args.volume, resume=args.resume, report=args.report,
        engine=args.engine, address=args.address, workers=args.workers, tta=not args.no_tta, allow_ct=args.allow_ct,
        save_probabilities=args.save_probabilities, preset=args.preset,
    ))
    for row in summary.rows:
        if not args.quiet and "kidney_area_px" in row:
            area = (f"{row['kidney_area_mm2']:.0f} mm^2" if row["kidney_area_mm2"] is not None
                    else f"{row['kidney_area_px']} px (pixel spacing unknown)")
            print(f"{row['case']}: kidney {area}, {row['seconds']:.2f} s")
        elif not args.quiet:
            vols = ", ".join(f"{k[:-3].replace('kidney_', '')} {v:.1f} mL" for k, v in row.items()
                             if isinstance(k, str) and k.endswith("_ml"))
            print(f"{row['case']}: {vols}, kidneys {row['kidney_count']}, {row['seconds']:.1f} s")
    if summary.skipped and not args.quiet:
        print(f"{len(summary.skipped)} case(s) already done, skipped: {', '.join(summary.skipped)}")
    for case, msg in summary.failures:
        print(f"kidneyseg: error: {_one_line(msg)}", file=sys.stderr)
    return 2 if summary.failures else 0


_LEGACY_TRAIN_FLAGS: dict[str, dict[str, str]] = {
    "mr-t2-unet": {"folds": "folds", "iterations": "iterations", "batch_size": "batch_size",
                   "patch_size": "patch_size", "learning_rate": "learning_rate", "context_slices": "context_slices",
                   "seed": "seed", "exclude": "exclude_cases", "flip_lr": "augment_flip_lr", "threads": "num_threads"},
    "us-ensemble": {"epochs": "epochs", "batch_size": "batch_size", "learning_rate": "learning_rate", "seed": "seed",
                    "threads": "num_threads", "mode": "mode", "patch_size": "image_size",
                    "encoder_weights": "encoder_weights"},
    "em-unet3d": {"epochs": "epochs", "batch_size": "batch_size", "learning_rate": "learning_rate", "seed": "seed",
                  "threads": "num_threads", "localiser": "localiser", "super_resolution": "super_resolution",
                  "histogram_reference": "histogram_references"},
    "kits-unet3d": {"iterations": "iterations", "learning_rate": "learning_rate", "seed": "seed",
                    "threads": "num_threads"},
}
"""``kidneyseg train --pipeline NAME``'s config flags -> the method's config fields; the form
is translated to ``kidneyseg train NAME`` (:func:`kidneyseg.cli_train.run`)."""
_LEGACY_TRAIN_FLAGS["c2f-cascade"] = _LEGACY_TRAIN_FLAGS["kits-unet3d"]
_LEGACY_RUN_FLAGS = {"us-ensemble": ("images", "reference"), "em-unet3d": ("fold", "cross_validate", "folds", "exclude"),
                     "kits-unet3d": ("exclude", "plan", "memory_gb"), "c2f-cascade": ("exclude",),
                     "mr-t2-unet": ("fold", "cross_validate")}
"""Flags of the legacy form each method's run function reads besides its config."""


def _cmd_train(args) -> int:
    """``kidneyseg train --pipeline NAME ...`` (the earlier form): its flags become the
    method's config fields, and a flag the method does not use is refused."""
    from . import cli_train

    name = args.pipeline
    mapping = _LEGACY_TRAIN_FLAGS[name]
    defaults = vars(build_parser().parse_args(["train", "--dataset", "-", "-o", "-"]))
    used = {k for k, v in defaults.items() if getattr(args, k, v) != v}
    common = {"dataset", "layout", "output", "config", "pipeline", "device", "quiet", "debug", "verbose", "command"}
    stray = sorted(used - common - set(mapping) - set(_LEGACY_RUN_FLAGS[name]))
    if stray:
        flag = "--" + stray[0].replace("_", "-")
        raise InputError(f"{flag}: not used by {name} (kidneyseg train {name} --help lists its settings)")
    ns = argparse.Namespace(**vars(args))
    ns.layout = args.layout or cli_train.METHODS[name].layouts[0]
    ns.preset, ns.subjects, ns.subject_pattern = None, None, None
    for flag, field_name in mapping.items():
        value = getattr(args, flag)
        if flag == "encoder_weights" and value:
            pairs = [w.split("=", 1) for w in value]
            if any(len(p) != 2 for p in pairs):
                raise InputError(f"--encoder-weights: expected MEMBER=PATH, got {value}")
            value = dict(pairs)
        setattr(ns, "cfg__" + field_name, value)
    return cli_train.run(name, ns)


def _cmd_list_models(args) -> int:
    from .models.store import SHIPPED_MODELS, default_model_dir
    from .pipelines import DEFAULT_PIPELINE, PIPELINES

    for name, info in PIPELINES.items():
        mark = " (default)" if name == DEFAULT_PIPELINE else ""
        print(f"{name}{mark}\t{info.modality}\t{info.description}")
    for name in SHIPPED_MODELS:
        print(f"shipped model folder: {default_model_dir(name)}")
    return 0


def _fmt(v: float) -> str:
    return "inf" if v == float("inf") else f"{v:.4g}"


def _cmd_evaluate(args) -> int:
    from .api import evaluate

    ev = evaluate(args.pred, args.ref, args.output, regions=args.regions, labels=args.labels,
                  label_map=args.label_map, tolerance_mm=args.tolerance_mm, plots=not args.no_plots,
                  overwrite=args.overwrite, workers=args.workers, progress=not args.quiet,
                  pixel_spacing_mm=args.pixel_spacing_mm, report=args.report)
    for kind, ids in (("prediction", ev.unmatched_pred), ("reference", ev.unmatched_ref)):
        if ids:
            print(f"kidneyseg: warning: {len(ids)} case(s) with a {kind} only, not evaluated: {', '.join(ids)}",
                  file=sys.stderr)
    if not args.quiet:
        cases = len({r["case"] for r in ev.rows})
        print(f"{cases} case(s) evaluated; median (mean) [n_inf]:")
        stats = {(s["region"], s["metric"]): s for s in ev.summary}
        for region in dict.fromkeys(r["region"] for r in ev.rows):
            parts = []
            for m in ("dice", "hd95_mm", "assd_mm", "surface_dice"):
                s = stats[(region, m)]
                parts.append(f"{m} {_fmt(s['median'])} ({_fmt(s['mean'])})" + (f" [{s['n_inf']}]" if s["n_inf"] else ""))
            print(f"  {region}: " + ", ".join(parts))
        print(f"tables and plots written to {args.output}")
    return 0


def suggest_pipeline(modality: str, ndim: int) -> str:
    """The pipeline ``kidneyseg segment`` should be run with for an input, and why."""
    if ndim == 4:
        return ("none directly (a 4D series); for diffusion-weighted MRI run `kidneyseg dti` (needs --bval/--bvec), "
                "then em-unet3d on md.nii.gz with --secondary fa.nii.gz")
    if ndim == 2 or modality == "US":
        return "us-ensemble (2D ultrasound frame; needs --model, no model is shipped)"
    if modality == "CT":
        return ("kits-unet3d (kidney, tumour, cyst on contrast CT) or c2f-cascade (kidney, tumour); each needs --model "
                "from kidneyseg train --pipeline NAME, no CT model is shipped")
    if modality in ("MR", ""):
        return ("mr-auto (shipped models: the multiprotocol model for whole-abdomen axial, coronal, sagittal and "
                "near-isotropic scans, the T2 model for axial slabs it is confident on; volumes.csv says which it used)"
                + ("" if modality else "; the file does not say its modality"))
    return f"none: modality {modality!r} is not supported"


def _dicom_image_sets(p: Path) -> list:
    """The image sets of the one DICOM series in folder ``p`` (:mod:`kidneyseg.io.image_sets`);
    ``[]`` for a file, or a folder that is not one series (``read_image`` then says why)."""
    if not p.is_dir():
        return []
    from .errors import InputError
    from .io.readers import dicom_image_sets

    try:
        return dicom_image_sets(p)[1]
    except InputError:
        return []


def _cmd_info(args) -> int:
    import numpy as np

    from .io import axcodes, read_image

    p = Path(args.input)
    if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg"):
        from .preprocess.ultrasound import read_us_frame

        f = read_us_frame(p)
        print(f"file: {p}\nshape: {f.array.shape} (2D frame, H x W)\nbit_depth: {f.bit_depth}\n"
              f"pixel_spacing_mm: {f.pixel_spacing_mm or 'unknown'}\n"
              f"colour overlay pixels: {0 if f.overlay is None else int(f.overlay.sum())}\n"
              f"range: {f.array.min():.3f} .. {f.array.max():.3f} (scaled to [0, 1])\n"
              f"pipeline: {suggest_pipeline('US', 2)}")
        return 0
    sets = _dicom_image_sets(p)
    img = read_image(args.input, volume=1 if len(sets) > 1 else None)
    a = np.asarray(img.array)
    codes = axcodes(img.affine) if img.ndim >= 3 else None
    orientation = "n/a (2D)" if codes is None else (
        "".join(codes) if None not in codes else "undefined (singular affine: an axis has no direction)")
    print(f"file: {img.source}\nshape: {img.shape}\ndtype: {a.dtype}\nspacing_mm: "
          f"{tuple(round(s, 4) for s in img.spacing_mm)}\norientation: {orientation}")
    if a.dtype.kind in "biuf":
        print(f"range: {a.min()} .. {a.max()}")
    if len(sets) > 1:
        from .io.image_sets import list_image_sets

        print(f"image sets: {len(sets)} images at each slice position ({list_image_sets(sets)}); shown: set 1; segment reads "
              "set 1 for echoes or magnitude/phase, else asks for --volume N")
    print(f"modality: {img.modality or 'not recorded'}\npipeline: {suggest_pipeline(img.modality, img.ndim)}")
    if img.ndim == 3 and img.modality in ("MR", "") and None not in (codes or (None,)):
        from .io import acquisition_plane_name, to_canonical
        from .pipelines.mr_routes import acquisition_route

        plane = acquisition_plane_name(to_canonical(img, copy=False)[0].spacing_mm)
        route = acquisition_route(img)
        model = ("mr_t2_kidney (mr_multiprotocol_kidney if that model is not confident or finds no kidney)"
                 if route is None else f"mr_multiprotocol_kidney ({route})")
        print(f"acquisition plane: {plane}\nmr-auto model: {model}")
    return 0


def _cmd_dti(args) -> int:
    from .api import dti_maps

    paths = dti_maps(args.dwi, args.bval, args.bvec, args.output, mask=args.mask, fit_method=args.fit_method,
                     overwrite=args.overwrite)
    if not args.quiet:
        print("wrote " + ", ".join(p.name for p in paths.values()) + f" to {args.output}")
    return 0


def _cmd_plan(args) -> int:
    from .api import plan_dataset

    preset = {}
    if args.preset == "paper":
        from .specs.kits import PAPER_PLAN

        preset = dict(PAPER_PLAN)
    spacing = tuple(args.target_spacing_mm) if args.target_spacing_mm else preset.get("target_spacing_mm")
    plan = plan_dataset(args.dataset, args.output, layout=args.layout, memory_budget_gb=args.memory_gb,
                        target_spacing_mm=spacing,
                        normalisation=args.normalisation or preset.get("normalisation", "ct_clip_zscore"),
                        masks_only=args.masks_only, overwrite=args.overwrite,
                        base_filters=int(preset.get("base_filters", 32)))
    if not args.quiet:
        print(f"target spacing {plan.target_spacing_mm} mm, patch {plan.patch_size}, batch {plan.batch_size}, "
              f"{len(plan.strides)} levels, about {plan.estimated_memory_gb} GB; wrote {args.output}")
    return 0


def _cmd_ensemble(args) -> int:
    from .training.ensemble import make_ensemble

    out = make_ensemble(args.models, args.output)
    if not args.quiet:
        print(f"ensemble of {len(args.models)} models written to {out}")
    return 0


def _cmd_demo(args) -> int:
    from .api import run_demo

    run_demo(args.output, device=args.device, overwrite=args.overwrite, progress=not args.quiet, threads=args.threads)
    return 0


_COMMANDS = {"segment": _cmd_segment, "train": _cmd_train, "list-models": _cmd_list_models,
             "info": _cmd_info, "demo": _cmd_demo, "evaluate": _cmd_evaluate, "dti": _cmd_dti,
             "plan": _cmd_plan, "ensemble": _cmd_ensemble}


def _terminated(signum, frame):
    from .io.writers import remove_staged_files

    remove_staged_files()
    raise SystemExit(128 + signum)


def _one_line(message: object) -> str:
    """A message on one line: library messages may carry newlines."""
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kidneyseg`` console script; returns the exit status."""
    from . import cli_train

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] == "train" and argv[1] in cli_train.METHODS:  # kidneyseg train <method> ...
        args = cli_train.build_parser(argv[1], _add_common).parse_args(argv[2:])
        args.command, args.method = "train-method", argv[1]
    else:
        args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like an exception, so staged temporary files are deleted; the caller's
        # handler is put back on return (main() also runs in-process, from Python and tests)
        previous = signal.signal(signal.SIGTERM, _terminated)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    # libraries' progress chatter is not ours to print: highdicom logs each copied module at INFO
    # level (nine lines per DICOM SEG), nibabel logs header fixes our readers report themselves
    for name, level in (("highdicom", logging.WARNING), ("nibabel", logging.ERROR)):
        logging.getLogger(name).setLevel(level)
    from .progress import STAGE_LOGGER

    logging.getLogger(STAGE_LOGGER).setLevel(logging.INFO if getattr(args, "verbose", False) and not args.quiet else logging.WARNING)
    # libraries' Python warnings (numpy RuntimeWarning, MONAI UserWarning) are not a user's
    # concern on the command line: kidneyseg's own warnings are log lines; --debug shows them all
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if args.debug else logging.CRITICAL)
    try:
        return _run(args)
    finally:
        logging.captureWarnings(False)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        if args.command == "train-method":
            from . import cli_train

            return cli_train.run(args.method, args)
        return _COMMANDS[args.command](args)
    except InputError as exc:
        print(f"kidneyseg: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kidneyseg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: one line unless --debug
        if args.debug:
            raise
        print(f"kidneyseg: internal error: {exc.__class__.__name__}: {_one_line(exc)} (rerun with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
