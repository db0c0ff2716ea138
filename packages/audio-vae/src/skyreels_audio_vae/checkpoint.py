"""Save and load :class:`AudioVAE` as ``model.safetensors`` + ``config.json`` (atomic writes).

Nothing is unpickled: the weights are safetensors and the config is JSON validated by
:class:`AudioVAEConfig` (unknown keys are errors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from skyreels_audio_vae.model import AudioVAE, AudioVAEConfig

__all__ = ["CONFIG_FILENAME", "WEIGHTS_FILENAME", "load_audio_vae", "save_audio_vae"]

CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "model.safetensors"
_FORMAT = "skyreels-audio-vae"
_FORMAT_VERSION = 1


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same directory, then ``os.replace`` it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; weights are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def config_to_dict(config: AudioVAEConfig) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_from_dict(data: dict[str, Any]) -> AudioVAEConfig:
    """Inverse of :func:`config_to_dict`; unknown keys raise ``ValueError``."""
    known = {f.name for f in dataclasses.fields(AudioVAEConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"config: unknown AudioVAEConfig keys {unknown}; expected a subset of {sorted(known)}"
        )
    return AudioVAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def save_audio_vae(model: AudioVAE, directory: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (weights + latent statistics) into ``directory``."""
    if not isinstance(model, AudioVAE):
        raise TypeError(f"model: expected AudioVAE, got {type(model).__name__}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _atomic_write(out / WEIGHTS_FILENAME, lambda tmp: save_file(state, tmp, metadata={"format": _FORMAT}))
    payload = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "config": config_to_dict(model.config)}

    def write_json(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    _atomic_write(out / CONFIG_FILENAME, write_json)
    return out


def load_audio_vae(directory: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> AudioVAE:
    """Build the model from ``config.json`` and load ``model.safetensors`` strictly."""
    root = Path(directory)
    config_path, weights_path = root / CONFIG_FILENAME, root / WEIGHTS_FILENAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"directory: expected {path.name} in {root}, it is missing")
    payload = json.loads(config_path.read_text(encoding="utf-8"))
    if payload.get("format") != _FORMAT or payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"config.json: expected format {_FORMAT!r} version {_FORMAT_VERSION}, "
            f"got {payload.get('format')!r} version {payload.get('format_version')!r}"
        )
    model = AudioVAE(config_from_dict(payload["config"]))
    model.load_state_dict(load_file(weights_path, device="cpu"), strict=True)
    return model.to(device)
