"""Reading and writing audio files: soundfile for I/O, soxr for resampling (no torchaudio here).

Layout: ``[channels, samples]`` float32 for one clip. Channel conversion is explicit: mono from
several channels is their mean; stereo from mono duplicates the channel; anything else raises.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from skyreels_v4.errors import FileFormatError, NonFiniteError

__all__ = [
    "AUDIO_SUFFIXES",
    "atomic_write",
    "convert_channels",
    "list_audio_files",
    "load_audio",
    "write_wav",
]

AUDIO_SUFFIXES = (".wav", ".flac")


def list_audio_files(root: str | os.PathLike[str]) -> list[Path]:
    """All ``.wav``/``.flac`` files under ``root`` (recursive), sorted by relative path."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"root: expected a directory of wav/flac files, {base} does not exist")
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def convert_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``[c, samples]`` -> ``[channels, samples]`` (mean to mono, duplicate mono to stereo)."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    raise ValueError(f"channels: cannot convert {have}-channel audio to {channels} channels")


def load_audio(path: str | os.PathLike[str], *, sample_rate: int, channels: int) -> Tensor:
    """Decode ``path``, convert channels, resample to ``sample_rate`` (soxr "HQ"): ``[channels, samples]``.

    A missing, unreadable or empty file raises ``FileFormatError`` naming it; NaN/inf samples raise
    ``NonFiniteError`` naming it (always: a poisoned clip would poison a whole training run).
    """
    for name, value in (("sample_rate", sample_rate), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    target = Path(path)
    if not target.is_file():
        raise FileFormatError(target, "expected an audio file, but it is missing")
    try:
        data, file_rate = sf.read(str(target), dtype="float32", always_2d=True)  # [samples, c]
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise FileFormatError(target, f"cannot decode this audio file ({error})") from error
    if data.shape[0] == 0:
        raise FileFormatError(target, "expected audio samples, but the file holds none (empty audio)")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise NonFiniteError(f"{target}: expected finite audio samples, got {bad} NaN/inf of {data.size}")
    try:
        audio = convert_channels(np.ascontiguousarray(data.T), channels)
    except ValueError as error:
        raise FileFormatError(target, str(error)) from error
    if file_rate != sample_rate:
        audio = soxr.resample(audio.T, file_rate, sample_rate, quality="HQ").T
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


def write_wav(path: str | os.PathLike[str], audio: Tensor | np.ndarray, sample_rate: int) -> Path:
    """Atomically write ``[channels, samples]`` float audio as 16-bit PCM wav (clipped to [-1, 1])."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    array = (
        audio.detach().cpu().float().numpy() if isinstance(audio, Tensor) else np.asarray(audio, np.float32)
    )
    if array.ndim != 2:
        raise ValueError(f"audio: expected [channels, samples], got shape {array.shape}")
    return atomic_write(
        target,
        lambda tmp: sf.write(tmp, np.clip(array.T, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV"),
    )


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, make it readable (0644), then
    ``os.replace`` it onto ``path``: readers never see a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
