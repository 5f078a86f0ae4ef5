"""``kidneyseg train <method>``: one subcommand per trainable pipeline, whose flags are that
method's config fields (``--iterations``, ``--target-spacing-mm``, ...), generated from the
config dataclass in :mod:`kidneyseg.specs` with the help text of its docstring. A flag the
method's config does not have is refused by argparse (exit 2), so nothing is silently ignored.

``kidneyseg train --pipeline NAME ...`` (the earlier form, a fixed set of flags) still works.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import InputError


@dataclass(frozen=True)
class Method:
    """A trainable pipeline as ``kidneyseg train`` sees it.

    Attributes:
        config: ``"module:Class"`` of its config dataclass (imported when used).
        layouts: dataset layouts it reads; the first is the default.
        run: ``run(config, args) -> model folder`` (``args`` holds the non-config flags).
        fixed: config fields set from other flags (not offered as flags of their own).
        defaults: config values this subcommand starts from (before ``--config`` and flags).
        presets: ``--preset NAME`` -> ``"module:ATTR"`` of a dict of config values (e.g. the
            values the method's paper states), applied after ``defaults``, before ``--config``.
    """

    config: str
    layouts: tuple[str, ...]
    run: Callable
    fixed: tuple[str, ...] = ()
    defaults: dict = dataclasses.field(default_factory=dict)
    presets: dict = dataclasses.field(default_factory=dict)

    def preset(self, name: str) -> dict:
        return dict(pkgutil.resolve_name(self.presets[name]))

    def config_class(self) -> type:
        return pkgutil.resolve_name(self.config)


def add_fold_flags(p, single_folds: bool = True) -> None:
    """``--fold`` and ``--cross-validate``, read by :func:`fold_choice`."""
    p.add_argument("--fold", default=None, metavar="K|all",
                   help=("fold K of the cross-validation split only (into OUT/fold_K), or " if single_folds else "")
                   + "'all': one model on all training cases, as nnU-Net's --fold all (the same as no --fold)")
    p.add_argument("--cross-validate", action="store_true",
                   help="every fold into OUT/fold_K (split by patient), cv_summary.json, then the model on all cases")


def fold_choice(args, single_folds: bool = True) -> int | str | None:
    """What ``--fold`` / ``--cross-validate`` ask for, with nnU-Net's meanings: ``None`` for one
    model on all training cases (no flag, or ``--fold all``), a fold index for ``--fold K``,
    ``"cv"`` for ``--cross-validate`` (every fold into ``fold_K/``, ``cv_summary.json``, then
    the model on all cases).

    Raises:
        InputError: both flags, a fold that is not an index, or ``--fold K`` where
            ``single_folds`` is false (em-unet3d cross-validates all folds or none).
    """
    cv = getattr(args, "cross_validate", False)
    if cv and args.fold is not None:
        raise InputError("--fold and --cross-validate: give one (--fold K trains fold K, --fold all one model on all "
                         "cases, --cross-validate every fold and then the model on all cases)")
    if cv:
        return "cv"
    if args.fold in (None, "all"):
        return None
    if not single_folds:
        raise InputError(f"--fold {args.fold}: em-unet3d trains all folds or none (--cross-validate; --fold all or "
                         "no --fold trains one model on all cases)")
    try:
        return int(args.fold)
    except ValueError:
        raise InputError(f"--fold: expected a fold index or 'all', got {args.fold!r}") from None


def _run_mr(config, args):
    from .api import train_model

    return train_model(config, args.output, folds=fold_choice(args), progress=not args.quiet)


def _run_us(config, args):
    from .training.us import train_on_kidneyus

    if args.images is None:
        raise InputError("--images: required by kidneyseg train us-ensemble (the Open Kidney US image folder)")
    return train_on_kidneyus(config, args.dataset, args.images, args.output, reference=args.reference,
                             split_seed=config.seed, progress=not args.quiet)


def _run_em(config, args):
    from .api import train_em_unet3d

    folds = None
    if fold_choice(args, single_folds=False) == "cv":
        folds = args.folds if args.folds is not None else "loso"
    elif args.folds is not None:
        raise InputError("--folds: only with --cross-validate")
    return train_em_unet3d(config, args.dataset, args.output, layout=args.layout, exclude=tuple(args.exclude or ()),
                           device=args.device, progress=not args.quiet, folds=folds, subjects=args.subjects,
                           subject_pattern=args.subject_pattern)


def _run_kits(config, args):
    from .api import train_kits_unet3d

    return train_kits_unet3d(config, args.dataset, args.output, layout=args.layout, exclude=tuple(args.exclude or ()),
                             progress=not args.quiet, plan=args.plan, memory_budget_gb=args.memory_gb)


def _run_c2f(config, args):
    from .api import train_c2f_cascade

    return train_c2f_cascade(config, args.dataset, args.output, layout=args.layout, exclude=tuple(args.exclude or ()),
                             progress=not args.quiet)


_MR = ("dataset", "layout", "device", "fold")
METHODS: dict[str, Method] = {
    "mr-t2-unet": Method("kidneyseg.specs.mr_unet:TrainConfig", ("chaos", "nnunet"), _run_mr, _MR),
    "mr-multiprotocol-unet": Method(
        "kidneyseg.specs.mr_unet:TrainConfig", ("chaos", "nnunet"), _run_mr, _MR,
        defaults={"recipe": "multiplane", "context_slices": 0, "augment_intensity": "strong"}),
    "us-ensemble": Method("kidneyseg.specs.us:USTrainConfig", ("kidneyus",), _run_us, ("device",),
                          presets={"paper": "kidneyseg.specs.us:PAPER"}),
    "em-unet3d": Method("kidneyseg.specs.em_unet:EMUNetConfig", ("chaos", "nnunet"), _run_em,
                        presets={"paper": "kidneyseg.specs.em_unet:PAPER"}),
    "kits-unet3d": Method("kidneyseg.specs.kits:KitsConfig", ("kits", "nnunet"), _run_kits, ("device",),
                          presets={"paper": "kidneyseg.specs.kits:PAPER"}),
    "c2f-cascade": Method("kidneyseg.specs.c2f:C2FConfig", ("kits", "nnunet"), _run_c2f, ("device",),
                          presets={"paper": "kidneyseg.specs.c2f:PAPER"}),
}
"""``kidneyseg train <name>``: the trainable pipelines."""


def field_help(cls: type) -> dict[str, str]:
    """The first sentence of each attribute in ``cls``'s docstring ``Attributes:`` section."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[-1].splitlines():
        m = re.match(r"^\s{8}(\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and re.match(r"^\s{12}\S", line):
            out[name] += " " + line.strip()
        elif line.strip():
            name = None
    return {k: (re.split(r"\.\s+(?=[A-Z`(])", v)[0].rstrip(".") + ".") if v else "" for k, v in out.items()}


def _flag_type(f: dataclasses.Field, default):
    """``(argparse keyword arguments)`` for config field ``f`` from its annotation and default."""
    ann = str(f.type)
    if isinstance(default, bool) or ann == "bool":
        return {"action": argparse.BooleanOptionalAction}
    if ann.startswith("dict") or isinstance(default, dict) or "tuple[tuple" in ann:
        return {"type": json.loads, "metavar": "JSON"}
    if ann.startswith("tuple") or isinstance(default, tuple):
        inner = ann[ann.find("[") + 1:].split(",")[0].strip(" ]") if "[" in ann else ""
        kind = {"int": int, "float": float}.get(inner, str)
        return {"nargs": "+", "type": kind}
    base = ann.replace(" | None", "").replace("None | ", "").strip()
    return {"type": {"int": int, "float": float}.get(base, str)}


def add_config_flags(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...]) -> list[str]:
    """One flag per field of config dataclass ``cls`` (``--field-name``), in a group of their
    own; returns the field names offered."""
    helps = field_help(cls)
    group = p.add_argument_group(f"{cls.__name__} fields (override --config)")
    names = []
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kwargs = _flag_type(f, default)
        if "action" not in kwargs:
            kwargs.setdefault("metavar", f.name.upper())
        shown = json.dumps(default) if isinstance(default, (dict, tuple, list)) else default
        text = f"{helps.get(f.name, '').rstrip('.')} (default: {shown})".strip().replace("%", "%%")  # argparse formats help
        group.add_argument("--" + f.name.replace("_", "-"), dest=f"cfg__{f.name}", default=None, help=text, **kwargs)
        names.append(f.name)
    return names


def build_parser(name: str, common: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """The parser of ``kidneyseg train NAME``; ``common`` adds the shared flags (``--device``,
    ``--quiet``, ...)."""
    method = METHODS[name]
    cls = method.config_class()
    p = argparse.ArgumentParser(prog=f"kidneyseg train {name}",
                                description=f"Train a {name} model; every {cls.__name__} field is a flag.")
    p.add_argument("--dataset", required=True, help="training data folder"
                   + (" (Open Kidney US labels)" if name == "us-ensemble" else ""))
    p.add_argument("-o", "--output", required=True, help="model folder to write")
    p.add_argument("--config", default=None, help=f"JSON file with {cls.__name__} fields (flags override it)")
    if method.presets:
        p.add_argument("--preset", default=None, choices=sorted(method.presets),
                       help="start from a named set of values (paper: every value the method's paper states); "
                            "--config and flags override it")
    if method.layouts != ("kidneyus",):
        p.add_argument("--layout", default=method.layouts[0], choices=method.layouts, help="dataset layout")
    if name in ("mr-t2-unet", "mr-multiprotocol-unet", "em-unet3d"):
        add_fold_flags(p, single_folds=name != "em-unet3d")
    if name == "em-unet3d":
        p.add_argument("--folds", type=int, default=None, help="with --cross-validate: N subject folds instead of "
                                                                "leave-one-subject-out")
        p.add_argument("--subjects", default=None, metavar="CSV",
                       help="CSV with columns case, subject: a subject's scans are held out together")
        p.add_argument("--subject-pattern", default=None, metavar="REGEX",
                       help="the subject is the first group of this regular expression on the case id, "
                            "e.g. '^(.+)_t[0-9]+$' (default: each case its own subject)")
    if name in ("em-unet3d", "kits-unet3d", "c2f-cascade"):
        p.add_argument("--exclude", nargs="*", default=None, help="case ids never used for training")
    if name == "kits-unet3d":
        p.add_argument("--plan", default=None, help="plan JSON from kidneyseg plan (default: plan the dataset now)")
        p.add_argument("--memory-gb", type=float, default=8.0, help="memory budget when planning now")
    if name == "us-ensemble":
        p.add_argument("--images", default=None, help="folder of the Open Kidney US images")
        p.add_argument("--reference", default="sonographer1",
                       choices=["sonographer1", "sonographer2", "intersection", "union", "staple"],
                       help="which capsule annotation is the target")
    skip = method.fixed + (("dataset", "layout") if name in ("mr-t2-unet", "mr-multiprotocol-unet") else ())
    add_config_flags(p, cls, skip)
    common(p)
    return p


def config_from_args(name: str, args: argparse.Namespace):
    """The method's config: its subcommand defaults, then ``--config``, then the flags."""
    method = METHODS[name]
    cls = method.config_class()
    fields = dict(method.defaults)
    if getattr(args, "preset", None):
        fields.update(method.preset(args.preset))
    if args.config:
        try:
            given = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--config {args.config}: unreadable JSON ({exc})") from None
        for key, value in given.items():  # a nested config (em-unet3d's "em") is merged, not replaced
            both = isinstance(value, dict) and isinstance(fields.get(key), dict)
            fields[key] = {**fields[key], **value} if both else value
    fields.update({k[5:]: v for k, v in vars(args).items() if k.startswith("cfg__") and v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    if "device" in names:
        fields["device"] = args.device
    if name in ("mr-t2-unet", "mr-multiprotocol-unet"):
        fields.update(dataset=args.dataset, layout=args.layout)
    unknown = sorted(set(fields) - names - {"pipeline"})
    if unknown:
        raise InputError(f"train {name}: unknown {cls.__name__} field(s) {', '.join(unknown)}")
    try:
        return cls.from_dict(fields)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"train {name}: invalid configuration ({exc})") from None


def run(name: str, args: argparse.Namespace) -> int:
    """``kidneyseg train NAME``: build the config, train, print the model folder."""
    config = config_from_args(name, args)
    out = METHODS[name].run(config, args)
    print(f"model written to {out}")
    return 0


__all__ = ["METHODS", "Method", "add_config_flags", "build_parser", "config_from_args", "field_help", "run"]
