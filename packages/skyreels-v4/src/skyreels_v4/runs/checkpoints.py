"""Lightning checkpoints that are written atomically and read safely (issue 14, "Files").

- :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO``): ``torch.save`` into a temporary file
  beside the target, then ``os.replace``: a ``kill -9`` during a save leaves the previous
  ``last.ckpt`` intact. Loads go through :func:`read_checkpoint`.
- :func:`read_checkpoint`: ``torch.load(weights_only=True)`` (never unpickles code), with
  ``FileFormatError`` naming the file for missing, truncated, corrupt or non-Lightning files, and
  saying how to proceed (delete it, or resume from another checkpoint it lists). A sharded
  checkpoint folder (``SkyReelsParallelStrategy``) gives its plain-data part, checked the same way.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from skyreels_v4.errors import FileFormatError
from skyreels_v4.io import atomic_path

__all__ = ["AtomicCheckpointIO", "other_checkpoints", "read_checkpoint", "sharded_checkpoint"]

_REQUIRED_KEYS = ("state_dict", "global_step", "loops")


def other_checkpoints(path: str | os.PathLike[str]) -> list[Path]:
    """The other ``.ckpt`` files beside ``path``, newest first (where a rerun could resume from)."""
    target = Path(path)
    if not target.parent.is_dir():
        return []
    found = [p for p in target.parent.glob("*.ckpt") if p.is_file() and p.resolve() != target.resolve()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _how_to_proceed(target: Path) -> str:
    others = other_checkpoints(target)
    advice = f"delete {target.name} to start this run over"
    if others:
        names = ", ".join(str(p) for p in others[:3])
        advice += f", or resume from an older checkpoint with --ckpt_path (found: {names})"
    return advice


def read_checkpoint(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", mmap: bool = False, lightning: bool = True
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; ``FileFormatError`` naming it otherwise.

    ``lightning``: also require the keys a Lightning training checkpoint has
    (``state_dict``, ``global_step``, ``loops``). ``mmap``: map tensors instead of reading them.
    """
    target = Path(path)
    sharded = sharded_checkpoint(target)
    if sharded is not None:
        return _read_sharded(target, sharded, lightning=lightning)
    if target.is_dir():
        raise FileFormatError(
            target,
            "a folder, but not a complete sharded checkpoint (no skyreels_checkpoint.json: a save that "
            f"was killed, or another tool's format). {_how_to_proceed(target)}",
        )
    if not target.is_file():
        raise FileFormatError(target, "expected a checkpoint file, but it is missing")
    try:
        checkpoint = torch.load(target, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileFormatError(
            target,
            f"refused to load: it holds objects other than tensors and plain data ({first}); "
            f"checkpoints are loaded with weights_only=True. {_how_to_proceed(target)}",
        ) from error
    except Exception as error:  # the weights-only unpickler runs no code: anything else is corruption
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileFormatError(
            target, f"truncated or corrupt checkpoint ({first}). {_how_to_proceed(target)}"
        ) from error
    if not isinstance(checkpoint, dict):
        raise FileFormatError(target, f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    if lightning:
        missing = [key for key in _REQUIRED_KEYS if key not in checkpoint]
        if missing:
            raise FileFormatError(
                target,
                f"not a Lightning training checkpoint (missing {missing}). {_how_to_proceed(target)}",
            )
    return checkpoint


def sharded_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """The complete sharded checkpoint folder ``path`` names (``SkyReelsParallelStrategy``'s format,
    ``skyreels_v4.scale.checkpoint``; a save killed before its final rename is found by its
    ``.partial`` twin), or None for anything else."""
    target = Path(path)
    if target.is_file():
        return None
    from skyreels_v4.scale.checkpoint import complete_checkpoint  # the format's owner (lazy: no cycle)

    return complete_checkpoint(target)


def _read_sharded(target: Path, folder: Path, *, lightning: bool) -> dict[str, Any]:
    """The plain-data part of a sharded Lightning checkpoint (weights stay on disk until the strategy
    loads them on every rank; ``sharded_weights`` names their folder)."""
    from skyreels_v4.scale.checkpoint import read_extra

    checkpoint = read_extra(folder)
    if lightning:
        missing = [key for key in _REQUIRED_KEYS if key != "state_dict" and key not in checkpoint]
        if missing:
            raise FileFormatError(
                target,
                f"not a Lightning training checkpoint (missing {missing}). {_how_to_proceed(target)}",
            )
    return {**checkpoint, "sharded_weights": str(folder)}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic saves and ``weights_only=True`` typed loads (module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("storage_options: AtomicCheckpointIO takes none")
        with atomic_path(path, ".ckpt") as temp:
            torch.save(checkpoint, temp)

    def load_checkpoint(
        self, path: str | os.PathLike[str], map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            raise ValueError("weights_only: checkpoints are only loaded with weights_only=True")
        return read_checkpoint(path, map_location=map_location or "cpu", lightning=False)
