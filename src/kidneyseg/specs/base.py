"""One base for the configs that are saved as JSON (model folders, run records): JSON-ready
dicts, reading back with nested configs and tuples restored, copies with changes."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="SpecConfig")


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as read from JSON, turned back into the annotated type where JSON lost it: a
    nested config (a dict for a :class:`SpecConfig` field) and tuples (lists for ``tuple[...]``
    fields, also nested); ``X | None`` takes ``None`` or ``X``. Anything else is returned as is
    (the dataclass's ``__post_init__`` validates)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, options[0]) if len(options) == 1 else value
    if isinstance(hint, type) and issubclass(hint, SpecConfig) and isinstance(value, dict):
        return hint.from_dict(value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        return tuple(value)
    return value


class SpecConfig:
    """Mixin for frozen dataclass configs (``config.json`` in a model folder, ``inference.json``).

    ``to_dict`` is :func:`dataclasses.asdict` plus the class's :attr:`JSON_EXTRA` keys (e.g. the
    pipeline's name); ``from_dict`` restores nested configs and tuples from the annotations
    (:func:`_coerce`) and drops keys that are not fields, so a config written by a newer
    kidneyseg still loads, unless :attr:`STRICT_KEYS` (then unknown keys raise ``TypeError``
    naming them); validation is the dataclass's ``__post_init__``; ``replace`` is
    :func:`dataclasses.replace` (validated again).
    """

    STRICT_KEYS: ClassVar[bool] = False
    JSON_EXTRA: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), **self.JSON_EXTRA}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], d: dict) -> T:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(names) - set(cls.JSON_EXTRA))
        if unknown and cls.STRICT_KEYS:
            raise TypeError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: _coerce(d[k], hints[k]) for k in names if k in d})

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


__all__ = ["SpecConfig"]
