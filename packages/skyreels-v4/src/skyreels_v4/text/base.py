"""The text-encoder interface (paper 3.1: one frozen encoder shared by the video and audio branches).

A ``TextEncoder`` is an ``nn.Module`` that turns final prompt strings (plus, for multimodal encoders,
reference images ``[3, H, W]`` and video clips ``[3, F, H, W]`` in [-1, 1], per prompt) into
``TextEmbeddings``. Subclasses implement ``_encode``; ``encode`` validates the inputs, runs without
gradients while the encoder is frozen, and checks the outputs' shape and finiteness.

On disk an encoder is a folder: ``config.json`` ``{"class": <adapter>, "format_version": 1,
"config": {...}}`` plus safetensors weights (and tokenizer / processor files for Hugging Face
adapters). ``load_text_encoder`` reads the class field against an allow-list.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import shutil
import tempfile
import typing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from skyreels_v4.errors import FileFormatError, PreflightError
from skyreels_v4.io import atomic_write_json, read_json
from skyreels_v4.text.embeddings import TextEmbeddings
from skyreels_v4.text.validation import check_prompts, check_references

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "TextEncoder",
    "config_from_dict",
    "config_to_dict",
    "read_encoder_config",
]

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1

C = TypeVar("C")
E = TypeVar("E", bound="TextEncoder")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as JSON-ready data (enums by value, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_dict(config_cls: type[C], data: object, *, path: str | os.PathLike[str]) -> C:
    """Rebuild ``config_cls`` from ``data``; unknown or bad keys raise ``FileFormatError`` naming ``path``."""
    if not isinstance(data, dict):
        raise FileFormatError(
            path, f"expected a JSON object for {config_cls.__name__}, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FileFormatError(
            path, f"unknown {config_cls.__name__} keys {unknown}; expected some of {sorted(fields)}"
        )
    hints = typing.get_type_hints(config_cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kind = hints.get(name)
        origin = typing.get_origin(kind)
        try:
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                value = kind(value)
            elif origin is tuple and isinstance(value, list):
                value = tuple(value)
        except ValueError as error:
            raise FileFormatError(path, f"{config_cls.__name__}.{name}: {error}") from error
        kwargs[name] = value
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise FileFormatError(path, f"invalid {config_cls.__name__}: {error}") from error


def read_encoder_config(folder: str | os.PathLike[str]) -> tuple[str, dict[str, Any], Path]:
    """``(class name, config data, config path)`` of an encoder folder, with typed errors naming the file."""
    path = Path(folder) / CONFIG_NAME
    data = read_json(path, what="text-encoder config.json")
    if not isinstance(data, dict) or not isinstance(data.get("class"), str):
        raise FileFormatError(
            path, 'expected a JSON object with a "class" field naming the text-encoder adapter'
        )
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise FileFormatError(path, f"expected format_version {FORMAT_VERSION}, got {version!r}")
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise FileFormatError(path, f'expected "config" to be a JSON object, got {type(config).__name__}')
    return data["class"], config, path


class TextEncoder(nn.Module, ABC):
    """Base class of the shared text encoder's adapters.

    Subclasses set ``config_class`` and implement ``dim``, ``pooled_dim``, ``max_length``, ``_encode``,
    ``_save_files`` and ``_load``. Encoders are frozen (no parameter requires grad) unless a caller
    unfreezes them with ``requires_grad_(True)``.
    """

    #: whether ``encode`` accepts reference images / video clips.
    supports_images: ClassVar[bool] = False
    supports_videos: ClassVar[bool] = False
    config_class: ClassVar[type]

    def __init__(self) -> None:
        super().__init__()
        # A per-instance name for caches: two encoders never share cached embeddings by accident.
        self._identity = f"{type(self).__name__}:{uuid.uuid4().hex}"

    # -- what the transformer needs to know --------------------------------------------------------

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width ``D`` of the token embeddings (the joint transformer's ``text_dim``)."""

    @property
    @abstractmethod
    def pooled_dim(self) -> int | None:
        """Width ``P`` of the pooled vector, or None when the encoder has none."""

    @property
    @abstractmethod
    def max_length(self) -> int:
        """Most tokens one prompt keeps (longer prompts are truncated)."""

    @property
    def identity(self) -> str:
        """Unique per instance; with the dtype and device it keys ``PromptEmbeddingCache``."""
        return self._identity

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def freeze(self: E) -> E:
        """Stop gradients into every parameter and switch to eval mode."""
        self.requires_grad_(False)
        return self.eval()

    # -- encoding -------------------------------------------------------------------------------

    def encode(
        self,
        prompts: Sequence[str],
        *,
        images: Sequence[Sequence[torch.Tensor]] | None = None,
        videos: Sequence[Sequence[torch.Tensor]] | None = None,
    ) -> TextEmbeddings:
        """Embed ``prompts`` (final strings) with their reference ``images[i]`` / ``videos[i]``.

        Returns ``TextEmbeddings`` with ``tokens [B, L, dim]`` in the encoder's dtype on its device, a
        right-padded mask and ``pooled [B, pooled_dim]`` when the encoder has a pooled output.
        """
        prompt_list = check_prompts(prompts)
        image_lists = check_references(images, name="images", batch=len(prompt_list), ndim=3)
        video_lists = check_references(videos, name="videos", batch=len(prompt_list), ndim=4)
        name = type(self).__name__
        if image_lists is not None and any(image_lists) and not self.supports_images:
            raise ValueError(f"images: {name} is text-only and takes no reference images, got some")
        if video_lists is not None and any(video_lists) and not self.supports_videos:
            raise ValueError(f"videos: {name} is text-only and takes no reference videos, got some")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self._encode(prompt_list, image_lists, video_lists)
        if out.batch_size != len(prompt_list) or out.dim != self.dim:
            raise RuntimeError(
                f"{name}: produced tokens {tuple(out.tokens.shape)}, "
                f"expected [{len(prompt_list)}, L, {self.dim}]"
            )
        if out.length > self.max_length:
            raise RuntimeError(
                f"{name}: produced {out.length} tokens, more than max_length {self.max_length}"
            )
        pooled_width = None if out.pooled is None else int(out.pooled.shape[1])
        if pooled_width != self.pooled_dim:
            raise RuntimeError(f"{name}: produced pooled width {pooled_width}, expected {self.pooled_dim}")
        return out.check_finite(f"{name}.encode(prompts)")

    @abstractmethod
    def _encode(
        self,
        prompts: list[str],
        images: list[list[torch.Tensor]] | None,
        videos: list[list[torch.Tensor]] | None,
    ) -> TextEmbeddings:
        """Embed validated inputs (padding rows zeroed, mask right-padded)."""

    # -- files ----------------------------------------------------------------------------------

    @abstractmethod
    def _config_dict(self) -> dict[str, Any]:
        """The ``config`` object written to config.json."""

    @abstractmethod
    def _save_files(self, folder: Path) -> None:
        """Write weights (and tokenizer files) into ``folder`` (a fresh temporary folder)."""

    @classmethod
    @abstractmethod
    def _load(
        cls: type[E],
        folder: Path,
        config_data: dict[str, Any],
        config_path: Path,
        *,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> E:
        """Build the encoder from a folder whose config.json names this class."""

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write config.json + weights into ``folder`` atomically (a reader never sees half a folder).

        An existing folder is replaced only if it is empty or holds a text-encoder config.json.
        """
        target = Path(folder)
        if target.exists():
            if not target.is_dir():
                raise PreflightError(f"folder: {target} exists and is not a folder")
            if any(target.iterdir()) and not (target / CONFIG_NAME).is_file():
                raise PreflightError(
                    f"folder: {target} is not empty and holds no {CONFIG_NAME}; refusing to replace it"
                )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        except OSError as error:
            raise PermissionError(f"{target}: cannot write here ({error.strerror or error})") from error
        try:
            self._save_files(temp)
            config = {
                "class": type(self).__name__,
                "format_version": FORMAT_VERSION,
                "config": self._config_dict(),
            }
            atomic_write_json(temp / CONFIG_NAME, config)
            os.chmod(temp, 0o777 & ~_umask())
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
                os.replace(target, old / "x")
                os.replace(temp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temp, target)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        return target

    @classmethod
    def from_pretrained(
        cls: type[E],
        folder: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> E:
        """Load an encoder saved by ``save_pretrained``; config.json's class must be ``cls``."""
        if cls is TextEncoder:
            from skyreels_v4.text.registry import load_text_encoder

            return load_text_encoder(folder, dtype=dtype, device=device)  # type: ignore[return-value]
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
        name, data, path = read_encoder_config(folder)
        if name != cls.__name__:
            raise FileFormatError(path, f'expected "class": "{cls.__name__}", got {name!r}')
        encoder = cls._load(Path(folder), data, path, dtype=dtype, device=device)
        return encoder.freeze()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
