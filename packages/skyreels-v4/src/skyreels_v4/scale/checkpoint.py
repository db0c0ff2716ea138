"""Sharded training checkpoints with torch.distributed.checkpoint (DCP), and their export to the
pipeline's single-folder safetensors format (issue 15; docs/scale-out.md "Sharded checkpoints").

``save_sharded`` writes the model, the optimizer and the EMA weights of a run, each rank writing its
own shards (FSDP2 DTensors or plain tensors), plus ``skyreels_checkpoint.json`` (step, world size,
the DCP metadata file's SHA-256). ``load_sharded`` reads it back into a model laid out for *any*
world size (2 ranks -> 1 or 4: DCP reshards by tensor metadata) or into a plain single-process
model. ``export_pretrained`` turns it into ``config.json`` + ``model*.safetensors``
(``SkyReelsV4Transformer.save_pretrained``), EMA weights by default.

Safety: DCP stores its index (``.metadata``) as a pickle. ``load_sharded`` never runs plain
``pickle.load`` on it: it checks the SHA-256 recorded at save time and unpickles with an allow-list
of the DCP metadata classes, torch's dtype/size/layout types and paths only (anything else raises
``FileFormatError``). Tensor shards are read with ``torch.load(weights_only=True)`` by DCP itself,
and checked for NaN/inf as they arrive (every rank stops together).
Writes are atomic: a folder ``<name>.partial`` renamed once every rank has finished (rank 0 writes
the info file last, so a ``.partial`` folder with its info file is complete: ``complete_checkpoint``
takes it when a kill fell between removing the old folder and the rename, and the next save moves it
into place).

``extra``: plain data saved beside the tensors by rank 0 (``trainer_state.pt``, read back with
``weights_only=True`` and checked against its recorded SHA-256): what ``SkyReelsParallelStrategy``
stores there is the rest of a Lightning checkpoint (loops, callbacks, random states, data position).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor

from skyreels_v4.errors import FileFormatError
from skyreels_v4.io import all_finite, atomic_write_json, read_json

__all__ = [
    "CHECKPOINT_INFO",
    "complete_checkpoint",
    "ema_state",
    "export_pretrained",
    "gather_full_state",
    "is_sharded",
    "load_sharded",
    "read_extra",
    "save_sharded",
]

CHECKPOINT_INFO = "skyreels_checkpoint.json"
_METADATA = ".metadata"
_EXTRA = "trainer_state.pt"
_FORMAT = "skyreels-dcp-1"


def is_sharded(tensors: Iterable[Tensor]) -> bool:
    """Whether any of ``tensors`` (parameters, EMA shadows) is an FSDP2 shard (a DTensor): then saving,
    exporting or loading it is collective and goes through this module."""
    return any(isinstance(t, DTensor) for t in tensors)


def ema_state(model: nn.Module, shadows: list[Tensor] | dict[str, Tensor]) -> dict[str, Tensor]:
    """EMA weights keyed like ``model``'s parameters (``name -> tensor``), from a list in
    ``model.parameters()`` order (``JointTrainingModule.ema``) or a dict already keyed by name."""
    names = [name for name, _ in model.named_parameters()]
    if isinstance(shadows, dict):
        if sorted(shadows) != sorted(names):
            missing, extra = sorted(set(names) - set(shadows)), sorted(set(shadows) - set(names))
            raise ValueError(
                f"ema: expected one tensor per parameter; missing {missing[:3]}, extra {extra[:3]}"
            )
        return dict(shadows)
    if not isinstance(shadows, list | tuple) or len(shadows) != len(names):
        got = len(shadows) if isinstance(shadows, list | tuple) else type(shadows).__name__
        raise ValueError(f"ema: expected {len(names)} tensors in model.parameters() order; got {got}")
    return dict(zip(names, shadows, strict=True))


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_sharded(
    folder: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: list[Tensor] | dict[str, Tensor] | None = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a sharded checkpoint of ``model`` (+ ``optimizer``, + ``ema``, + rank 0's ``extra`` plain
    data) to ``folder``; collective: every rank calls it. An existing ``folder`` is replaced only once
    the new one is complete."""
    folder = Path(folder)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step!r}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra: expected a dict of plain data, got {type(extra).__name__}")
    if not folder.parent.is_dir():
        raise FileFormatError(folder, f"parent folder {folder.parent} does not exist")
    partial = _partial(folder)
    if _rank() == 0 and partial.exists():
        if not folder.exists() and (partial / CHECKPOINT_INFO).is_file():
            partial.rename(folder)  # the previous save was killed just before its rename: finish it
        else:
            shutil.rmtree(partial)
    _barrier()
    if optimizer is None:
        state: dict[str, Any] = {"model": get_model_state_dict(model)}
    else:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
    if ema is not None:
        state["ema"] = ema_state(model, ema)
    dcp.save(state, checkpoint_id=partial)
    if _rank() == 0:
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        info = {
            "format": _FORMAT,
            "step": step,
            "world_size": world,
            "contents": sorted(state),
            "metadata_sha256": _sha256(partial / _METADATA),
        }
        if extra is not None:
            torch.save(extra, partial / _EXTRA)
            info["extra_sha256"] = _sha256(partial / _EXTRA)
        atomic_write_json(partial / CHECKPOINT_INFO, info)  # last: it marks the folder complete
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
    _barrier()
    return folder


def _partial(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


def complete_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """``folder`` when it is a complete sharded checkpoint; its ``.partial`` twin when ``folder`` is
    missing and the twin is complete (a save killed between removing the old folder and its rename);
    else None."""
    folder = Path(folder)
    for candidate in (folder, _partial(folder)):
        if (candidate / CHECKPOINT_INFO).is_file():
            return candidate
        if candidate.exists():
            return None
    return None


# -- reading ---------------------------------------------------------------------------------------
_ALLOWED_MODULE_PREFIXES = ("torch.distributed.checkpoint.",)
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("torch.serialization", "_get_layout"),  # a lookup of torch.strided & co. by name
    ("pathlib", "PosixPath"),  # the checkpoint_id DCP records
    ("pathlib", "WindowsPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, handle: Any, path: Path) -> None:
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_ALLOWED_MODULE_PREFIXES) or (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise FileFormatError(
            self.path, f"DCP metadata refers to {module}.{name}, which a checkpoint index never holds"
        )


def _read_metadata(folder: Path, expected_sha256: str) -> Metadata:
    """The DCP index of ``folder``, checked against its recorded SHA-256 and unpickled through the
    allow-list."""
    path = folder / _METADATA
    if not path.is_file():
        raise FileFormatError(path, "missing DCP metadata (an incomplete checkpoint?)")
    if _sha256(path) != expected_sha256:
        raise FileFormatError(path, f"SHA-256 differs from the one {CHECKPOINT_INFO} recorded at save time")
    with open(path, "rb") as handle:
        try:
            metadata = _MetadataUnpickler(handle, path).load()
        except FileFormatError:
            raise
        except Exception as error:  # a truncated / corrupt index
            raise FileFormatError(path, f"unreadable DCP metadata ({error})") from None
    if not isinstance(metadata, Metadata):
        raise FileFormatError(path, f"expected DCP Metadata, got {type(metadata).__name__}")
    return metadata


class _CheckedReader(FileSystemReader):
    """DCP's file reader with the index read by ``_read_metadata`` (see the module docstring)."""

    def __init__(self, path: Path, expected_sha256: str) -> None:
        super().__init__(path)
        self._folder, self._expected = path, expected_sha256
        _read_metadata(path, expected_sha256)  # fail here, with our error, not inside dcp.load

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if kwargs.get("rank") is not None:
            raise FileFormatError(self._folder / _METADATA, "per-rank DCP metadata is not supported")
        metadata = _read_metadata(self._folder, self._expected)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _info(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise FileFormatError(folder, "expected a sharded checkpoint folder (written by save_sharded)")
    info = read_json(folder / CHECKPOINT_INFO)
    if not isinstance(info, dict) or info.get("format") != _FORMAT:
        got = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise FileFormatError(folder / CHECKPOINT_INFO, f"expected format {_FORMAT!r}, got {got!r}")
    return info


def load_sharded(
    folder: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: list[Tensor] | dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Load a ``save_sharded`` checkpoint into ``model`` (+ ``optimizer``, + ``ema`` tensors, in place),
    whatever the world size and sharding it was written with. Collective when distributed.
    Returns ``skyreels_checkpoint.json``: format, step, world_size (written with), contents,
    metadata_sha256."""
    folder = Path(folder)
    info = _info(folder)
    contents = set(info.get("contents", ()))
    for name, wanted in (("optimizer", optimizer), ("ema", ema)):
        if wanted is not None and name not in contents:
            raise FileFormatError(
                folder, f"{name} was requested but the checkpoint holds only {sorted(contents)}"
            )
    if optimizer is None:
        state: dict[str, Any] = {"model": get_model_state_dict(model)}
    else:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
    if ema is not None:
        state["ema"] = ema_state(model, ema)
    reader = _CheckedReader(folder, str(info.get("metadata_sha256", "")))
    no_dist = not (dist.is_available() and dist.is_initialized())
    dcp.load(state, storage_reader=reader, no_dist=no_dist)
    _check_finite(folder, {**state["model"], **{f"ema {k}": v for k, v in state.get("ema", {}).items()}})
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return info


def _check_finite(folder: Path, tensors: dict[str, Any]) -> None:
    """NaN/inf in any rank's loaded shards is a ``FileFormatError`` naming the tensor, raised on every
    rank together (one all-reduce when distributed). DCP loads in place, so the model already holds the
    checkpoint's values then: the error says not to use it."""
    bad = next(
        (
            name
            for name, value in tensors.items()
            if isinstance(value, Tensor)
            and value.is_floating_point()
            and not all_finite(value.to_local() if isinstance(value, DTensor) else value)
        ),
        None,
    )
    if dist.is_available() and dist.is_initialized():
        flag = torch.tensor([0.0 if bad is None else 1.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and bad is None:
            raise FileFormatError(folder, "another rank's shards hold NaN/inf; do not use this model")
    if bad is not None:
        raise FileFormatError(folder, f"{bad} holds NaN/inf; do not use this model")


def read_extra(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``extra`` plain data of a ``save_sharded`` checkpoint ({} when it has none): read with
    ``weights_only=True`` after checking its recorded SHA-256; ``FileFormatError`` otherwise."""
    folder = Path(folder)
    info = _info(folder)
    expected = info.get("extra_sha256")
    if expected is None:
        return {}
    path = folder / _EXTRA
    if not path.is_file():
        raise FileFormatError(path, f"missing, but {CHECKPOINT_INFO} records it")
    if _sha256(path) != expected:
        raise FileFormatError(path, f"SHA-256 differs from the one {CHECKPOINT_INFO} recorded at save time")
    try:
        extra = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler runs no code
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileFormatError(path, f"refused or unreadable ({first})") from None
    if not isinstance(extra, dict):
        raise FileFormatError(path, f"expected a dict, got {type(extra).__name__}")
    return extra


def gather_full_state(model: nn.Module, shadows: list[Tensor] | None = None) -> dict[str, Tensor] | None:
    """The whole state dict of a sharded (FSDP2) ``model`` on CPU, on rank 0; None on the other ranks.
    Collective: every rank calls it. ``shadows`` (EMA tensors in ``model.parameters()`` order) replace
    the parameters' values. Each tensor is gathered on its own, so no rank holds a second full copy of
    the model on the device."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if shadows is not None:
        for name, shadow in ema_state(model, list(shadows)).items():
            full = shadow.full_tensor() if isinstance(shadow, DTensor) else shadow
            if _rank() == 0:
                state[name] = full.detach().cpu()
    return state if _rank() == 0 else None


def export_pretrained(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    transformer: nn.Module,
    use_ema: bool = True,
    max_shard_size: int | str = "5GB",
) -> Path:
    """Sharded checkpoint -> ``out`` in the pipeline's single-folder safetensors format.

    ``transformer``: a plain (unsharded) ``SkyReelsV4Transformer`` of the run's config, whose weights
    are overwritten. One process (no process group needed). EMA weights when the checkpoint has them
    and ``use_ema``, else the trained weights.
    """
    if not hasattr(transformer, "save_pretrained"):
        raise TypeError(
            f"transformer: expected a SkyReelsV4Transformer (with save_pretrained), got "
            f"{type(transformer).__name__}"
        )
    folder = Path(checkpoint)
    info = _info(folder)
    key = "ema" if use_ema and "ema" in info.get("contents", ()) else "model"
    weights = {name: p.detach() for name, p in transformer.named_parameters()}
    state = {key: weights}
    dcp.load(state, storage_reader=_CheckedReader(folder, str(info.get("metadata_sha256", ""))), no_dist=True)
    for name, value in weights.items():
        if not bool(torch.isfinite(value).all()):
            raise FileFormatError(folder, f"{key} tensor {name} holds NaN/inf")
    return transformer.save_pretrained(out, max_shard_size=max_shard_size)
