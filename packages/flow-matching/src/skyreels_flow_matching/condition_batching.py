"""Concatenate model conditions along the batch, so cond and uncond run in one forward.

A condition is whatever the joint model takes besides latents and σ: a tensor, ``None``, or a
(nested) tuple, list, dict or dataclass of those. The rule is simple and strict: **every tensor in a
condition has the batch as its first dim**. Tensors are concatenated along dim 0; ``None`` must be
``None`` everywhere; other leaves (ints, strings, enums, ...) must be equal in every condition.
Data shared by the whole batch without a batch dim belongs in the model, not in the condition.
Conditions whose tensors differ beyond dim 0 (e.g. prompts of different lengths) cannot be
batched: pad them to one length with a mask, or use sequential guidance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["concat_conditions"]

ConditionT = TypeVar("ConditionT")


def concat_conditions(conditions: Sequence[ConditionT]) -> ConditionT:
    """Join conditions ``[B_1, ...], [B_2, ...], ...`` into one with batch ``B_1 + B_2 + ...``.

    Raises ValueError/TypeError naming the offending path (e.g. ``condition['text_tokens']``).
    """
    if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Sequence) or not conditions:
        raise ValueError(f"conditions must be a non-empty sequence, got {conditions!r}")
    return _concat(list(conditions), "condition")


def _concat(items: list[Any], path: str) -> Any:
    first = items[0]
    if isinstance(first, Tensor):
        if not all(isinstance(item, Tensor) for item in items):
            raise TypeError(f"{path} is a tensor in one condition but not in another: {_types(items)}")
        if first.ndim == 0 or any(item.shape[1:] != first.shape[1:] or item.ndim == 0 for item in items):
            raise ValueError(
                f"{path} must have a batch dim first and equal trailing shapes in every condition to be "
                f"batched, got shapes {[list(item.shape) for item in items]}; pad to one shape or use "
                "sequential guidance"
            )
        return torch.cat(items, dim=0)
    if first is None:
        if any(item is not None for item in items):
            raise TypeError(f"{path} is None in one condition but not in another: {_types(items)}")
        return None
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        if any(type(item) is not type(first) for item in items):
            raise TypeError(f"{path} must be the same dataclass in every condition, got {_types(items)}")
        changes = {
            f.name: _concat([getattr(item, f.name) for item in items], f"{path}.{f.name}")
            for f in dataclasses.fields(first)
            if f.init
        }
        return dataclasses.replace(first, **changes)
    if isinstance(first, Mapping):
        if any(not isinstance(item, Mapping) or item.keys() != first.keys() for item in items):
            raise ValueError(f"{path} must have the same keys in every condition, got {_keys(items)}")
        return type(first)({key: _concat([item[key] for item in items], f"{path}[{key!r}]") for key in first})
    if isinstance(first, (tuple, list)):
        if any(type(item) is not type(first) or len(item) != len(first) for item in items):
            raise ValueError(
                f"{path} must be a {type(first).__name__} of one length everywhere, got {_types(items)}"
            )
        parts = [_concat([item[i] for item in items], f"{path}[{i}]") for i in range(len(first))]
        if hasattr(first, "_fields"):  # NamedTuple
            return type(first)(*parts)
        return type(first)(parts)
    if any(type(item) is not type(first) or item != first for item in items):
        raise ValueError(f"{path} is not a tensor, so it must be equal in every condition, got {items!r}")
    return first


def _types(items: list[Any]) -> list[str]:
    return [type(item).__name__ for item in items]


def _keys(items: list[Any]) -> list[Any]:
    return [list(item.keys()) if isinstance(item, Mapping) else type(item).__name__ for item in items]
