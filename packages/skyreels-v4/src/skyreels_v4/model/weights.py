"""Weights folders: (sharded) safetensors + config.json, written atomically, loaded without a second copy.

Layout of one component folder (the diffusers convention, so tools that read diffusers folders find
their way)::

    config.json                                  {"_class_name": ..., "_format_version": 1, ...}
    model.safetensors                            one shard, or
    model-00001-of-00003.safetensors ...         several, with
    model.safetensors.index.json                 {"metadata": {"total_size": N}, "weight_map": {name: file}}

Saving writes the whole folder beside its destination and renames it into place, so a reader sees
either the old folder or the new one, never a mixture. Loading builds the module on the meta device
(no memory), then reads one shard at a time and *assigns* its tensors to the module, so the peak host
memory is the weights once plus one tensor in flight (``from_pretrained``'s "at most 1.2x the
weights"; measured in the tests).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from skyreels_v4.errors import FileFormatError, NonFiniteError
from skyreels_v4.io import atomic_write_json, read_json, read_safetensors, safetensors_keys, save_safetensors

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "WEIGHTS_NAME",
    "ShardPlan",
    "build_and_load",
    "load_state_into",
    "plan_shards",
    "read_component_config",
    "save_component",
    "weight_files",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
FORMAT_VERSION = 1

M = TypeVar("M", bound=nn.Module)


def _parse_size(value: int | str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"max_shard_size: expected bytes or a size like '5GB', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"max_shard_size: expected a positive number of bytes, got {value}")
        return value
    text = str(value).strip().upper()
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if text.endswith(unit):
            try:
                number = float(text[: -len(unit)])
            except ValueError:
                break
            if number > 0:
                return int(number * factor)
            break
    raise ValueError(f"max_shard_size: expected bytes or a size like '5GB', got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ShardPlan:
    """How a state dict is split into files (computed from sizes only: meta tensors work).

    files: ``(file name, tensor names)`` in order; one ``model.safetensors`` when everything fits.
    file_sizes: bytes of tensor data per file. total_size: bytes of all tensors.
    """

    files: tuple[tuple[str, tuple[str, ...]], ...]
    file_sizes: tuple[int, ...]
    total_size: int

    @property
    def num_shards(self) -> int:
        return len(self.files)

    def index(self) -> dict[str, Any] | None:
        """The ``model.safetensors.index.json`` content, or None for a single file."""
        if len(self.files) == 1:
            return None
        weight_map = {name: file for file, names in self.files for name in names}
        return {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}


def plan_shards(tensors: Mapping[str, torch.Tensor], max_shard_size: int | str = "5GB") -> ShardPlan:
    """Greedy split in state-dict order: a new file starts when the next tensor would overflow the
    limit (a tensor larger than the limit gets a file of its own). Reads no tensor data."""
    limit = _parse_size(max_shard_size)
    groups: list[list[str]] = [[]]
    sizes = [0]
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and sizes[-1] + nbytes > limit:
            groups.append([])
            sizes.append(0)
        groups[-1].append(name)
        sizes[-1] += nbytes
    if len(groups) == 1:
        files = ((WEIGHTS_NAME, tuple(groups[0])),)
    else:
        files = tuple(
            (f"model-{i:05d}-of-{len(groups):05d}.safetensors", tuple(group))
            for i, group in enumerate(groups, start=1)
        )
    return ShardPlan(files=files, file_sizes=tuple(sizes), total_size=sum(sizes))


def save_component(
    module: nn.Module,
    folder: str | os.PathLike[str],
    *,
    class_name: str,
    config: dict[str, Any],
    max_shard_size: int | str = "5GB",
    overwrite: bool = True,
) -> Path:
    """Write ``module``'s state dict and ``config`` into ``folder`` atomically (see the module doc).

    Non-finite weights are refused (``NonFiniteError`` naming the tensor): a NaN model is never saved.
    """
    target = Path(folder)
    _parse_size(max_shard_size)
    if target.exists() and not overwrite:
        raise FileExistsError(f"folder: {target} exists and overwrite=False")
    state = {k: v.detach() for k, v in module.state_dict().items()}
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(f"{class_name}: weight {name!r} holds NaN or inf; refusing to save it")
    plan = plan_shards(state, max_shard_size)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise PermissionError(f"{target}: cannot write here ({error.strerror or error})") from error
    try:
        for file, names in plan.files:
            save_safetensors(staging / file, {n: state[n] for n in names}, metadata={"format": "pt"})
        index = plan.index()
        if index is not None:
            atomic_write_json(staging / INDEX_NAME, index)
        atomic_write_json(
            staging / CONFIG_NAME, {"_class_name": class_name, "_format_version": FORMAT_VERSION, **config}
        )
        _replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _replace_folder(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` is swapped out first, then removed."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_component_config(folder: str | os.PathLike[str], *, class_name: str | None = None) -> dict[str, Any]:
    """``config.json`` of a component folder, checked: the format version and, if given, the class."""
    root = Path(folder)
    if not root.is_dir():
        raise FileFormatError(root, "expected a model folder, but it does not exist or is not a folder")
    data = read_json(root / CONFIG_NAME, what="component config.json")
    if not isinstance(data, dict):
        raise FileFormatError(root / CONFIG_NAME, f"expected a JSON object, got {type(data).__name__}")
    version = data.get("_format_version")
    if version != FORMAT_VERSION:
        raise FileFormatError(
            root / CONFIG_NAME,
            f"expected _format_version {FORMAT_VERSION}, got {version!r} (written by another tool?)",
        )
    if class_name is not None and data.get("_class_name") != class_name:
        raise FileFormatError(
            root / CONFIG_NAME, f"expected _class_name {class_name!r}, got {data.get('_class_name')!r}"
        )
    return data


def weight_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a component folder, in order (one file, or those named by the index)."""
    root = Path(folder)
    index = root / INDEX_NAME
    if index.exists():
        data = read_json(index, what="safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise FileFormatError(index, "expected a non-empty 'weight_map' object")
        files = sorted(set(weight_map.values()))
        for file in files:
            if not isinstance(file, str) or Path(file).name != file:
                raise FileFormatError(index, f"weight_map names {file!r}, expected a file name in the folder")
        return [root / file for file in files]
    single = root / WEIGHTS_NAME
    if not single.exists():
        raise FileFormatError(
            single, f"expected the weights ({WEIGHTS_NAME} or {INDEX_NAME}), neither exists"
        )
    return [single]


def load_state_into(
    module: nn.Module,
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    check_finite: bool = True,
) -> nn.Module:
    """Assign the folder's weights to ``module`` (typically built on the meta device), shard by shard.

    Every parameter and buffer of ``module`` must be found exactly once and with its shape; extra
    tensors in the files are errors too. Floating tensors are cast to ``dtype`` when given.
    """
    expected = dict(module.state_dict(keep_vars=True))
    seen: set[str] = set()
    for file in weight_files(folder):
        names = safetensors_keys(file)
        unknown = sorted(set(names) - set(expected))
        if unknown:
            raise FileFormatError(file, f"unexpected tensors {unknown[:5]} (not in {type(module).__name__})")
        tensors = read_safetensors(file, device=device, check_finite=check_finite)
        for name, tensor in tensors.items():
            want = expected[name]
            if tuple(tensor.shape) != tuple(want.shape):
                raise FileFormatError(
                    file,
                    f"tensor {name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(want.shape)}",
                )
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            tensors[name] = tensor
        module.load_state_dict(tensors, strict=False, assign=True)
        seen.update(tensors)
        del tensors
    missing = sorted(set(expected) - seen)
    if missing:
        raise FileFormatError(
            Path(folder), f"missing weights {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    return module


def build_and_load(
    build: Callable[[], M],
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> M:
    """``build()`` on the meta device, then :func:`load_state_into` (no second copy in memory)."""
    with torch.device("meta"):
        module = build()
    load_state_into(module, folder, dtype=dtype, device=device)
    leftovers = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftovers:
        raise FileFormatError(Path(folder), f"weights left unloaded: {leftovers[:5]}")
    return module
