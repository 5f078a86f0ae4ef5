"""One base for the method configs: JSON-ready dicts, tolerant reading, copies with changes."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T", bound="SpecConfig")


class SpecConfig:
    """Mixin for frozen dataclass configs (``config.json`` in a model folder).

    ``to_dict`` is :func:`dataclasses.asdict`; ``from_dict`` keeps the keys that are fields
    (a config written by a newer kidneyseg with extra keys still loads; validation is the
    dataclass's ``__post_init__``); ``replace`` is :func:`dataclasses.replace`.
    """

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], d: dict) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


__all__ = ["SpecConfig"]
