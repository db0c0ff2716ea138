"""What a pipeline stage is (paper 3.4): a small function over manifest rows, with a frozen config.

Four kinds, chosen by what the stage needs to see:

* ``SOURCE``: makes rows (lists the input folder). Runs on the driver.
* ``MAP``: one row in, measured values and an optional drop reason out. Runs in parallel (process
  pool or Ray) and is checkpointed row by row.
* ``EXPAND``: one row in, several rows out (shot segmentation, 15 s audio chunks). Parallel too.
* ``TABLE``: all kept rows in, all of them out (deduplication, balancing, concatenation, the
  captions file). Runs on the driver; it needs the whole table to decide.

Stages are registered by name with :func:`register_stage`; a pipeline YAML may also name any
importable ``"package.module:function"`` that was decorated with it. Hooks (models) are named the
same way, ``"module:Class"`` plus keyword arguments, and built once per process by :func:`load_hook`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyreels_v4.errors import SkyReelsError

__all__ = [
    "Drop",
    "HookSpec",
    "Stage",
    "StageContext",
    "StageKind",
    "StageResult",
    "build_config",
    "drop_row",
    "load_hook",
    "register_stage",
    "require_columns",
    "resolve_stage",
    "stage_names",
]


class StageKind(enum.Enum):
    SOURCE = "source"
    MAP = "map"
    EXPAND = "expand"
    TABLE = "table"


@dataclass(frozen=True, kw_only=True)
class StageContext:
    """Where the run reads and writes: sources are relative to ``input_dir``; stages that write
    files (exports, concatenated audio) write under ``output_dir``."""

    input_dir: Path
    output_dir: Path

    def source_path(self, source: str) -> Path:
        """``source`` relative to the input folder, or ``@output/...`` for files a stage wrote."""
        if source.startswith("@output/"):
            return self.output_dir / source.removeprefix("@output/")
        return self.input_dir / source


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What a MAP stage returns for one row: measured values and, if the clip fails, why."""

    values: dict[str, Any] = field(default_factory=dict)
    drop: str | None = None


class Drop(Exception):
    """Raise inside a stage to drop the clip with ``reason`` (e.g. an undecodable file)."""

    def __init__(self, reason: str, values: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.values = dict(values or {})


def drop_row(row: dict[str, Any], stage: str, reason: str) -> dict[str, Any]:
    """``row`` marked dropped by ``stage`` (for TABLE stages, which return whole rows)."""
    return {**row, "kept": False, "drop_reason": reason, "dropped_by": stage}


def require_columns(
    rows: list[dict[str, Any]], columns: tuple[str, ...], *, stage: str, producer: str
) -> None:
    """Raise naming the clip and column when a TABLE stage's input lacks a measured column."""
    for row in rows:
        missing = [c for c in columns if row.get(c) is None]
        if missing:
            raise SkyReelsError(
                f"stage {stage!r}: clip {row['id']!r} has no column {missing[0]!r}; "
                f"expected stage {producer!r} to run before it in the pipeline"
            )


@dataclass(frozen=True)
class Stage:
    name: str
    kind: StageKind
    fn: Callable[..., Any]
    config_type: type


_REGISTRY: dict[str, Stage] = {}
_BUILTIN_MODULES = (
    "skyreels_v4.data.video_stages",
    "skyreels_v4.data.dedup",
    "skyreels_v4.data.audio_stages",
    "skyreels_v4.data.sync",
    "skyreels_v4.data.images",
    "skyreels_v4.data.balance",
    "skyreels_v4.data.captions",
    "skyreels_v4.data.export",
)


def register_stage(name: str, kind: StageKind, config_type: type) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as stage ``name`` configured by the dataclass ``config_type``."""
    if not (dataclasses.is_dataclass(config_type) and config_type.__dataclass_params__.frozen):
        raise TypeError(f"config_type of stage {name!r}: expected a frozen dataclass, got {config_type!r}")

    def decorate(fn: Callable) -> Callable:
        _REGISTRY[name] = Stage(name=name, kind=StageKind(kind), fn=fn, config_type=config_type)
        fn.stage_name = name  # type: ignore[attr-defined]
        return fn

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def stage_names() -> list[str]:
    """The built-in stage names."""
    _load_builtins()
    return sorted(_REGISTRY)


@functools.cache
def resolve_stage(ref: str) -> Stage:
    """A built-in name (``"shots"``) or ``"package.module:function"`` -> its :class:`Stage`."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise SkyReelsError(
                f"stage {ref!r}: expected an importable 'module:function', got {error}"
            ) from error
        name = getattr(fn, "stage_name", None)
        if name is None or name not in _REGISTRY:
            raise SkyReelsError(f"stage {ref!r}: the function is not decorated with @register_stage")
        return _REGISTRY[name]
    _load_builtins()
    if ref not in _REGISTRY:
        raise SkyReelsError(f"stage: expected one of {sorted(_REGISTRY)} or 'module:function', got {ref!r}")
    return _REGISTRY[ref]


def build_config(stage: Stage, params: Mapping[str, Any] | None) -> Any:
    """The stage's frozen config from YAML params; unknown or badly typed keys raise, naming them."""
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(stage.config_type)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise SkyReelsError(
            f"stage {stage.name!r}: unknown parameter(s) {unknown}; expected some of {sorted(fields)}"
        )
    for key, value in list(params.items()):
        if isinstance(value, list):
            params[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    try:
        return stage.config_type(**params)
    except (TypeError, ValueError) as error:
        raise SkyReelsError(f"stage {stage.name!r}: bad parameters {params}: {error}") from error


@dataclass(frozen=True, kw_only=True)
class HookSpec:
    """A model hook: ``target`` is ``"module:Class"``; ``kwargs`` are passed to it (JSON-able)."""

    target: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(target: str, **kwargs: Any) -> HookSpec:
        return HookSpec(target=target, kwargs=tuple(sorted(kwargs.items())))


def load_hook(spec: HookSpec | str | Mapping[str, Any]) -> Any:
    """Build (once per process) the hook named by ``spec``: a :class:`HookSpec`, a ``"module:Class"``
    string or a YAML mapping ``{target: ..., kwargs: {...}}``."""
    if isinstance(spec, str):
        spec = HookSpec(target=spec)
    elif isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"target", "kwargs"})
        if unknown or "target" not in spec:
            raise SkyReelsError(
                f"hook: expected {{target: 'module:Class', kwargs: {{...}}}}, got {dict(spec)}"
            )
        spec = HookSpec.of(spec["target"], **dict(spec.get("kwargs") or {}))
    return _build_hook(spec.target, json.dumps(spec.kwargs))


@functools.cache
def _build_hook(target: str, kwargs_json: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise SkyReelsError(f"hook: expected 'module:Class', got {target!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise SkyReelsError(f"hook {target!r}: cannot import it ({error})") from error
    return factory(**{k: v for k, v in json.loads(kwargs_json)})
