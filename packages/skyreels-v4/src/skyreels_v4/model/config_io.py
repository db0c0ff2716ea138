"""Frozen config dataclasses as plain JSON data, and back, for every config of the toolkit.

``to_plain`` writes enums by value, tuples as lists and nested dataclasses as dicts; ``from_plain``
rebuilds the dataclass from its type hints (nested dataclasses, enums, tuples, ``X | None``), so a
``config.json`` round-trips exactly. Unknown keys, wrong types and bad enum values raise
``ValueError`` / ``TypeError`` naming the key path (e.g. ``transformer.video.rope.theta``); the
dataclass's own validation runs as usual.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["from_plain", "to_plain"]

T = TypeVar("T")


def to_plain(value: Any) -> Any:
    """A config (or any nesting of dataclasses, enums, tuples, dicts, scalars) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot write the non-finite number {value!r} to a config")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot write a {type(value).__name__} to a config")


def from_plain(cls: type[T], data: Any, *, name: str = "config") -> T:
    """Rebuild the dataclass ``cls`` from :func:`to_plain` data (or return ``data`` if already one)."""
    return _convert(cls, data, name)


def _convert(hint: Any, data: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, data, name)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise TypeError(f"{name}: {data!r} fits none of {hint}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if data not in typing.get_args(hint):
            raise ValueError(f"{name}: expected one of {typing.get_args(hint)}, got {data!r}")
        return data
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(data, (list, tuple)):
            raise TypeError(f"{name}: expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{name}[{i}]") for i, v in enumerate(data))
        if args and len(args) != len(data):
            raise ValueError(f"{name}: expected {len(args)} items, got {len(data)}")
        return tuple(_convert(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(data, Mapping):
            raise TypeError(f"{name}: expected a mapping, got {type(data).__name__}")
        args = typing.get_args(hint) or (Any, Any)
        return {k: _convert(args[1], v, f"{name}[{k!r}]") for k, v in data.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(data, hint):
            return data
        if not isinstance(data, Mapping):
            raise TypeError(f"{name}: expected a {hint.__name__} or its dict, got {type(data).__name__}")
        hints = typing.get_type_hints(hint)
        fields = {f.name: f for f in dataclasses.fields(hint) if f.init}
        unknown = sorted(str(k) for k in data if k not in fields)
        if unknown:
            raise ValueError(
                f"{name}: unknown keys {unknown} for {hint.__name__}, expected some of {sorted(fields)}"
            )
        kwargs = {key: _convert(hints[key], value, f"{name}.{key}") for key, value in data.items()}
        try:
            return hint(**kwargs)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name}: {error}") from error
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(data, hint):
            return data
        try:
            return hint(data)
        except ValueError:
            allowed = [member.value for member in hint]
            raise ValueError(f"{name}: expected one of {allowed}, got {data!r}") from None
    if hint is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise TypeError(f"{name}: expected a number, got {data!r}")
        return float(data)
    if hint in (int, str, bool):
        if not isinstance(data, hint) or (hint is int and isinstance(data, bool)):
            raise TypeError(f"{name}: expected {hint.__name__}, got {data!r}")
        return data
    if hint is type(None):
        if data is not None:
            raise TypeError(f"{name}: expected null, got {data!r}")
        return None
    return data
