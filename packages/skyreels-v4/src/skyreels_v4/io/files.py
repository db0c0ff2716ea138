"""Atomic writes and typed reads: a reader never sees a half-written file, and a bad file raises
``FileFormatError`` naming it instead of a raw library error.

Every writer renders into a temporary file in the destination folder and then ``os.replace``s it;
an exception removes the temporary file, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from skyreels_v4.errors import FileFormatError

__all__ = [
    "all_finite",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "read_safetensors",
    "safetensors_keys",
    "save_safetensors",
]


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite (non-floating tensors always are).

    One reduction: a finite sum proves every element finite, because NaN and inf propagate into it.
    Only a non-finite sum (a real NaN/inf, or finite values whose sum overflows) pays for the exact
    elementwise test, which reads the tensor three times more.
    """
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return True
    values = tensor.detach()
    if bool(torch.isfinite(values.sum())):
        return True
    return bool(torch.isfinite(values).all())


# safetensors: 8-byte little-endian header length, then a JSON header; refuse absurd headers early.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed.

    The parent folder is created if needed; a folder that cannot be written raises
    ``PermissionError`` naming ``path`` before any work is done by the caller.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as error:
        raise PermissionError(f"{target}: cannot write here ({error.strerror or error})") from error
    os.close(handle)
    try:
        yield Path(temp)
        # mkstemp creates the file private (0600); give it the permissions of a normal new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, ".tmp") as temp:
        temp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON (NaN/inf refused) atomically."""
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError as error:
        raise ValueError(f"{path}: cannot write non-finite numbers to JSON ({error})") from error
    return atomic_write_text(path, text)


def read_json(path: str | os.PathLike[str], *, what: str = "JSON file") -> Any:
    """Parse ``path``; missing, unreadable or malformed files raise ``FileFormatError`` naming it."""
    target = Path(path)
    if not target.is_file():
        raise FileFormatError(target, f"expected a {what}, but it is missing")
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FileFormatError(target, f"cannot read this {what}: {error}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise FileFormatError(
            target, f"expected a {what}, but it is not valid JSON (line {error.lineno}: {error.msg})"
        ) from error


def _safetensors_header(target: Path) -> dict[str, Any]:
    """Read and check the header: its length, its JSON and that every tensor lies inside the file."""
    if not target.is_file():
        raise FileFormatError(target, "expected a safetensors file, but it is missing")
    size = target.stat().st_size
    try:
        with open(target, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise FileFormatError(target, f"truncated safetensors file ({size} bytes, no header)")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_MAX_HEADER_BYTES, size - 8):
                raise FileFormatError(
                    target,
                    f"not a safetensors file or truncated (header of {length} bytes in a {size}-byte file)",
                )
            raw = handle.read(length)
    except OSError as error:
        raise FileFormatError(target, f"cannot read: {error}") from error
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(target, f"corrupt safetensors header ({error})") from error
    if not isinstance(header, dict):
        raise FileFormatError(target, "corrupt safetensors header (not a JSON object)")
    data_bytes = size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise FileFormatError(target, f"corrupt safetensors header entry for tensor {name!r}")
        if offsets[1] > data_bytes:
            raise FileFormatError(
                target, f"truncated: tensor {name!r} ends at byte {offsets[1]} of {data_bytes} data bytes"
            )
    return header


def safetensors_keys(path: str | os.PathLike[str]) -> list[str]:
    """Tensor names stored in ``path`` (header only; no tensor is read)."""
    return [k for k in _safetensors_header(Path(path)) if k != "__metadata__"]


def read_safetensors(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    keys: list[str] | None = None,
    check_finite: bool = False,
) -> dict[str, torch.Tensor]:
    """Load tensors from ``path`` (all, or ``keys``) with typed errors naming the file.

    ``check_finite`` raises ``NonFiniteError`` naming the file and tensor if any value is NaN/inf.
    """
    from safetensors import SafetensorError, safe_open

    from skyreels_v4.errors import NonFiniteError

    target = Path(path)
    _safetensors_header(target)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(target), framework="pt", device=str(device)) as handle:
            names = list(handle.keys()) if keys is None else keys
            missing = sorted(set(names) - set(handle.keys()))
            if missing:
                more = " ..." if len(missing) > 5 else ""
                raise FileFormatError(target, f"missing tensors {missing[:5]}{more}")
            for name in names:
                out[name] = handle.get_tensor(name)
    except SafetensorError as error:
        raise FileFormatError(target, f"corrupt safetensors file ({error})") from error
    if check_finite:
        for name, tensor in out.items():
            if not all_finite(tensor):
                raise NonFiniteError(f"{target}: tensor {name!r} holds NaN or inf values")
    return out


def save_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` (moved to CPU, made contiguous) to ``path`` atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path, ".safetensors") as temp:
        save_file(state, str(temp), metadata=dict(metadata) if metadata else None)
    return Path(path)
