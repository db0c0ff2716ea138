"""The refiner module's configs as plain hparams data, and back.

``RefinerLightningModule`` keeps its config dataclasses in ``hparams`` as plain dicts (enums by
value, tuples as lists), so that a checkpoint loads with ``torch.load(weights_only=True)`` without
unpickling our classes. ``load_from_checkpoint`` then calls ``__init__`` with those dicts, and the
functions here rebuild the configs: one typed conversion per config, unknown keys and enum values
raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from skyreels_attention import AttentionConfig
from skyreels_flow_matching import ShiftConfig, ShiftRule, TimestepDistribution, TimestepSamplerConfig
from skyreels_refiner_vsa import SparsityRamp, VSAConfig

__all__ = ["as_sampler_config", "as_sparsity_ramp", "as_vsa_config", "to_hparams"]

_E = TypeVar("_E", bound=enum.Enum)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_hparams(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data: nested dicts, enums by value, tuples as lists."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config: expected a dataclass instance, got {type(config).__name__}")
    return _plain(dataclasses.asdict(config))


def _fields(name: str, value: object, cls: type) -> dict[str, Any]:
    """``value`` as a dict of ``cls``'s init fields; TypeError / ValueError naming ``name`` otherwise."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a {cls.__name__} or its hparams dict, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise ValueError(
            f"{name}: unknown keys {unknown} for {cls.__name__}, expected some of {sorted(known)}"
        )
    return dict(value)


def _build(name: str, cls: type, data: dict[str, Any]) -> Any:
    """``cls(**data)`` with the config's own validation errors prefixed by ``name``."""
    try:
        return cls(**data)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name}: {error}") from error


def _enum(name: str, cls: type[_E], value: object) -> _E:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = [member.value for member in cls]
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}") from None


def _attention_config(value: AttentionConfig | Mapping[str, Any], name: str) -> AttentionConfig:
    if isinstance(value, AttentionConfig):
        return value
    return _build(name, AttentionConfig, _fields(name, value, AttentionConfig))


def _shift_config(value: ShiftConfig | Mapping[str, Any], name: str) -> ShiftConfig:
    if isinstance(value, ShiftConfig):
        return value
    data = _fields(name, value, ShiftConfig)
    if "rule" in data:
        data["rule"] = _enum(f"{name}.rule", ShiftRule, data["rule"])
    return _build(name, ShiftConfig, data)


def as_vsa_config(value: VSAConfig | Mapping[str, Any], *, name: str = "vsa") -> VSAConfig:
    """A ``VSAConfig`` from itself or from its hparams dict (``cube`` a list, ``dense`` a dict)."""
    if isinstance(value, VSAConfig):
        return value
    data = _fields(name, value, VSAConfig)
    if isinstance(data.get("cube"), list | tuple):
        data["cube"] = tuple(data["cube"])
    if "dense" in data:
        data["dense"] = _attention_config(data["dense"], f"{name}.dense")
    return _build(name, VSAConfig, data)


def as_sparsity_ramp(
    value: SparsityRamp | Mapping[str, Any] | None, *, name: str = "sparsity_ramp"
) -> SparsityRamp | None:
    """A ``SparsityRamp`` (or None) from itself or from its hparams dict."""
    if value is None or isinstance(value, SparsityRamp):
        return value
    return _build(name, SparsityRamp, _fields(name, value, SparsityRamp))


def as_sampler_config(
    value: TimestepSamplerConfig | Mapping[str, Any] | None, *, name: str = "sampler"
) -> TimestepSamplerConfig:
    """A ``TimestepSamplerConfig`` from itself, its hparams dict, or None (the default, uniform σ)."""
    if value is None:
        return TimestepSamplerConfig()
    if isinstance(value, TimestepSamplerConfig):
        return value
    data = _fields(name, value, TimestepSamplerConfig)
    if "distribution" in data:
        data["distribution"] = _enum(f"{name}.distribution", TimestepDistribution, data["distribution"])
    if "shift" in data:
        data["shift"] = _shift_config(data["shift"], f"{name}.shift")
    return _build(name, TimestepSamplerConfig, data)
