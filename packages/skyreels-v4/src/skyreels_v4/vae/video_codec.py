"""The video codec interface of the composed model (paper 3.1: "a pretrained video VAE" turns pixels
into the latents the video branch denoises, and back) and the folder format every codec saves.

Shape legend: B batch, F pixel frames, H, W pixels, C latent channels, T latent frames, h, w latent size.

A :class:`VideoCodec` satisfies ``skyreels_inpaint_conditioning.VideoVae``: ``encode`` maps pixels
``[B, 3, F, H, W]`` in [-1, 1] to NORMALISED latents ``[B, C, T, h, w]`` (deterministic, causal:
``T = 1 + (F - 1) // temporal_factor`` and latent 0 depends on frame 0 only); ``decode`` maps them
back to pixels clamped to [-1, 1]. Subclasses implement ``_encode_block`` / ``_decode_block`` for one
batch slice and one spatial tile; this class validates inputs and applies :mod:`.tiling`.

Call ``encode``/``decode`` under ``torch.no_grad()`` for inference (the codecs are frozen in every
stage of the paper); they do not switch autograd off themselves.

Folder format: ``config.json`` with ``"class"`` (one of :data:`VIDEO_CODEC_CLASSES`), ``"format_version"``
and the class's own fields, plus the class's weights (safetensors). :func:`load_video_codec` reads the
class name and builds only classes on the allow-list.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError
from skyreels_v4.io import read_json
from skyreels_v4.vae.tiling import VideoTilingConfig, temporal_chunked_decode, tiled_spatial_apply

__all__ = [
    "VIDEO_CODEC_CLASSES",
    "VideoCodec",
    "atomic_folder",
    "load_video_codec",
    "read_codec_config",
    "require_fields",
    "tiling_from_config",
]

FORMAT_VERSION = 1
_PIXEL_RANGE_TOLERANCE = 1e-3


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success it replaces ``folder``, else it is removed."""
    target = Path(folder)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise PermissionError(f"{target}: cannot write here ({error.strerror or error})") from error
    try:
        yield temp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def read_codec_config(folder: str | os.PathLike[str], expected_class: str | None = None) -> dict[str, Any]:
    """``folder/config.json`` as a dict, checked for a known ``"class"`` and format version."""
    path = Path(folder) / "config.json"
    data = read_json(path, what="codec config.json")
    if not isinstance(data, dict) or not isinstance(data.get("class"), str):
        raise FileFormatError(path, 'expected a JSON object with a string "class" field')
    if data.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(
            path, f"expected format_version {FORMAT_VERSION}, got {data.get('format_version')!r}"
        )
    if expected_class is not None and data["class"] != expected_class:
        raise FileFormatError(path, f"expected class {expected_class!r}, got {data['class']!r}")
    return data


def require_fields(folder: Path, config: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of a codec config, or ``FileFormatError`` naming config.json and the missing ones."""
    missing = [name for name in names if name not in config]
    if missing:
        raise FileFormatError(folder / "config.json", f"missing fields {missing}")
    return {name: config[name] for name in names}


def tiling_from_config(folder: Path, config: dict[str, Any]) -> VideoTilingConfig:
    """The ``"tiling"`` entry of a codec config (absent: no tiling)."""
    tiling = config.get("tiling", {})
    try:
        return VideoTilingConfig(**tiling)
    except TypeError as error:
        raise FileFormatError(folder / "config.json", f"bad tiling entry {tiling!r}: {error}") from error


class VideoCodec(nn.Module):
    """Base class of the video codecs (module docstring). Subclasses set the three factors."""

    temporal_factor: int
    spatial_factor: int
    latent_channels: int
    class_name: ClassVar[str]

    def __init__(self, *, tiling: VideoTilingConfig | None = None) -> None:
        super().__init__()
        if tiling is not None and not isinstance(tiling, VideoTilingConfig):
            raise TypeError(f"tiling: expected a VideoTilingConfig, got {type(tiling).__name__}")
        self.tiling = tiling or VideoTilingConfig()

    # -- frame counts ---------------------------------------------------------------------------

    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames of ``num_frames`` pixel frames (``1 + (F - 1) // tf``; F must be ``1 + k * tf``)."""
        self._check_num_frames(num_frames, "num_frames")
        return 1 + (num_frames - 1) // self.temporal_factor

    def num_pixel_frames(self, num_latent_frames: int) -> int:
        """Pixel frames decoded from ``num_latent_frames`` latent frames (``1 + tf * (T - 1)``)."""
        if (
            isinstance(num_latent_frames, bool)
            or not isinstance(num_latent_frames, int)
            or num_latent_frames < 1
        ):
            raise ValueError(f"num_latent_frames: expected an int >= 1, got {num_latent_frames!r}")
        return 1 + self.temporal_factor * (num_latent_frames - 1)

    def _check_num_frames(self, num_frames: object, name: str) -> None:
        tf = self.temporal_factor
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {num_frames!r}")
        if (num_frames - 1) % tf:
            below = num_frames - (num_frames - 1) % tf
            works = ", ".join(str(1 + k * tf) for k in range(4)) + ", ..."
            raise SkyReelsError(
                f"{name}: expected 1 + k * {tf} frames ({works}) for this causal codec, got {num_frames}; "
                f"crop to {below} or pad to {below + tf} frames"
            )

    # -- validation -----------------------------------------------------------------------------

    def check_pixels(self, pixels: object) -> None:
        """Raise a typed error unless ``pixels`` is finite ``[B, 3, F, H, W]`` in [-1, 1], F, H, W valid."""
        if not isinstance(pixels, Tensor):
            raise TypeError(f"pixels: expected a tensor [B, 3, F, H, W], got {type(pixels).__name__}")
        if pixels.ndim != 5 or pixels.shape[1] != 3 or pixels.shape[0] == 0:
            raise ValueError(f"pixels: expected [B, 3, F, H, W] with B >= 1, got {tuple(pixels.shape)}")
        if not pixels.is_floating_point():
            raise TypeError(f"pixels: expected a floating tensor in [-1, 1], got {pixels.dtype}")
        self._check_num_frames(int(pixels.shape[2]), "pixels.shape[2] (F)")
        sf = self.spatial_factor
        height, width = int(pixels.shape[3]), int(pixels.shape[4])
        if height < sf or width < sf or height % sf or width % sf:
            raise ValueError(
                f"pixels: expected H and W positive multiples of the spatial factor {sf}, "
                f"got {height}x{width}"
            )
        if not bool(torch.isfinite(pixels).all()):
            raise NonFiniteError("pixels: holds NaN or inf values")
        low, high = float(pixels.min()), float(pixels.max())
        if low < -1 - _PIXEL_RANGE_TOLERANCE or high > 1 + _PIXEL_RANGE_TOLERANCE:
            raise ValueError(
                "pixels: expected values in [-1, 1] (convert [0, 1] with 2x - 1, [0, 255] with "
                f"x / 127.5 - 1), "
                f"got range [{low:.4g}, {high:.4g}]"
            )

    def check_latents(self, latents: object) -> None:
        """Raise a typed error unless ``latents`` is finite ``[B, C, T, h, w]`` with this codec's C."""
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents: expected a tensor [B, C, T, h, w], got {type(latents).__name__}")
        c = self.latent_channels
        if latents.ndim != 5 or latents.shape[1] != c or min(latents.shape) == 0:
            raise ValueError(
                f"latents: expected [B, {c}, T, h, w] with no empty axis, got {tuple(latents.shape)}"
            )
        if not latents.is_floating_point():
            raise TypeError(f"latents: expected a floating tensor, got {latents.dtype}")
        if not bool(torch.isfinite(latents).all()):
            raise NonFiniteError("latents: holds NaN or inf values")

    # -- public encode / decode -----------------------------------------------------------------

    def encode(self, pixels: Tensor) -> Tensor:
        """``[B, 3, F, H, W]`` pixels in [-1, 1] -> normalised latents ``[B, C, T, H / sf, W / sf]``."""
        self.check_pixels(pixels)
        h, w = pixels.shape[3] // self.spatial_factor, pixels.shape[4] // self.spatial_factor

        def one_slice(batch: Tensor) -> Tensor:
            return tiled_spatial_apply(
                self._encode_block,
                batch,
                cells=(h, w),
                in_per_cell=self.spatial_factor,
                out_per_cell=1,
                config=self.tiling,
            )

        return self._batched(one_slice, pixels)

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents ``[B, C, T, h, w]`` -> pixels ``[B, 3, 1 + tf * (T - 1), h * sf, w * sf]``,
        clamped to [-1, 1]."""
        self.check_latents(latents)
        h, w = int(latents.shape[3]), int(latents.shape[4])

        def spatial(chunk: Tensor) -> Tensor:
            return tiled_spatial_apply(
                self._decode_block,
                chunk,
                cells=(h, w),
                in_per_cell=1,
                out_per_cell=self.spatial_factor,
                config=self.tiling,
            )

        def one_slice(batch: Tensor) -> Tensor:
            if self.tiling.temporal_chunk_latents is None:
                return spatial(batch)
            return temporal_chunked_decode(
                spatial,
                batch,
                temporal_factor=self.temporal_factor,
                chunk_latents=self.tiling.temporal_chunk_latents,
                context_latents=self.tiling.temporal_context_latents,
            )

        return self._batched(one_slice, latents).clamp(-1.0, 1.0)

    def _batched(self, fn: Any, inputs: Tensor) -> Tensor:
        size = self.tiling.batch_slice
        if size is None or size >= inputs.shape[0]:
            return fn(inputs)
        return torch.cat([fn(part) for part in inputs.split(size)], dim=0)

    def _encode_block(self, pixels: Tensor) -> Tensor:
        """One batch slice and tile: ``[b, 3, F, H', W']`` -> normalised latents ``[b, C, T, h', w']``."""
        raise NotImplementedError

    def _decode_block(self, latents: Tensor) -> Tensor:
        """One batch slice, tile and chunk: latents ``[b, C, t, h', w']`` -> pixels (not yet clamped)."""
        raise NotImplementedError

    # -- folders --------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (with ``"class"``) and the weights into ``folder``, atomically."""
        with atomic_folder(folder) as temp:
            self._write_folder(temp)
        return Path(folder)

    def _write_folder(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> VideoCodec:
        """Load a folder written by :meth:`save_pretrained` of this class, in eval mode."""
        config = read_codec_config(folder, expected_class=cls.class_name)
        codec = cls._read_folder(Path(folder), config)
        codec = codec.eval()
        if dtype is not None or device is not None:
            codec = codec.to(device=device, dtype=dtype)
        return codec

    @classmethod
    def _read_folder(cls, folder: Path, config: dict[str, Any]) -> VideoCodec:
        raise NotImplementedError


def _registry() -> dict[str, type[VideoCodec]]:
    from skyreels_v4.vae.diffusers_video import DiffusersVideoVae
    from skyreels_v4.vae.pixel_shuffle import PixelShuffleVideoCodec
    from skyreels_v4.vae.tiny_video import TinyVideoAutoencoder

    return {c.class_name: c for c in (DiffusersVideoVae, PixelShuffleVideoCodec, TinyVideoAutoencoder)}


VIDEO_CODEC_CLASSES = ("DiffusersVideoVae", "PixelShuffleVideoCodec", "TinyVideoAutoencoder")
"""The class names :func:`load_video_codec` accepts (an allow-list: nothing else is imported)."""


def load_video_codec(
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> VideoCodec:
    """Load any of :data:`VIDEO_CODEC_CLASSES` from ``folder`` (dispatch on config.json's ``"class"``)."""
    config = read_codec_config(folder)
    registry = _registry()
    if config["class"] not in registry:
        raise FileFormatError(
            Path(folder) / "config.json",
            f"expected class one of {sorted(registry)}, got {config['class']!r}",
        )
    return registry[config["class"]].from_pretrained(folder, dtype=dtype, device=device)
