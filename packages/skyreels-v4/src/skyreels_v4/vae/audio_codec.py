"""The audio codec interface of the composed model and its adapter over ``skyreels_audio_vae.AudioVAE``
(paper section 3.1: the audio branch denoises the latents of a waveform VAE; 81 frames at 16 fps and
44.1 kHz with a 1024x VAE give 218 latents).

Shape legend: B batch, ch channels, S samples, C latent channels, L latents.

``encode(waveform [B, ch, S], sample_rate)`` converts at the boundary: resample to the codec's rate
(:func:`resample_waveform`), convert channels (mono <-> the codec's count), crop to a whole number of
hops (the floor rule of ``skyreels_audio_vae.num_audio_latents_for_frames``, so ``encode`` gives exactly
``num_latents_for_frames(F, fps)`` latents for a clip's audio), then returns normalised latents
``[B, C, L]``. ``decode(latents)`` returns ``[B, ch, L * hop]`` at the codec's rate, or resampled to
``sample_rate=``. Call both under ``torch.no_grad()`` for inference.

Folder format: ``config.json`` with ``"class"`` (one of :data:`AUDIO_CODEC_CLASSES`) and
``"format_version"``; :class:`AudioCodec` keeps its VAE in ``audio_vae/`` (``save_audio_vae``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from skyreels_audio_vae import (
    AudioVAE,
    chunked_decode,
    chunked_encode,
    load_audio_vae,
    num_audio_latents_for_frames,
    save_audio_vae,
)
from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError
from skyreels_v4.io import atomic_write_json
from skyreels_v4.vae.resample import convert_channels, resample_waveform
from skyreels_v4.vae.video_codec import FORMAT_VERSION, atomic_folder, read_codec_config, require_fields

__all__ = ["AUDIO_CODEC_CLASSES", "AudioChunkingConfig", "AudioCodec", "AudioCodecBase", "load_audio_codec"]

AUDIO_VAE_SUBFOLDER = "audio_vae"


def check_codec_settings(*, latent_scale: object, compression: object, **counts: object) -> None:
    """``ValueError`` naming the first bad setting of a zero-training audio codec: every count an int >= 1,
    ``latent_scale`` a finite number > 0, ``compression`` a number in (0, 1] (bools are not numbers)."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if (
        isinstance(latent_scale, bool)
        or not isinstance(latent_scale, (int, float))
        or not 0 < latent_scale < float("inf")
    ):
        raise ValueError(f"latent_scale: expected a finite number > 0, got {latent_scale!r}")
    if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not 0 < compression <= 1:
        raise ValueError(f"compression: expected a number in (0, 1], got {compression!r}")


class AudioCodecBase(nn.Module):
    """Validation, boundary conversion, counts and folders shared by the audio codecs."""

    sample_rate: int
    audio_channels: int
    latent_channels: int
    hop_length: int
    class_name: ClassVar[str]

    # -- counts ----------------------------------------------------------------------------------

    def num_latents(self, seconds: float) -> int:
        """Latents for ``seconds`` of audio: ``floor(seconds * sample_rate / hop_length)``."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float, Fraction)) or not seconds >= 0:
            raise ValueError(f"seconds: expected a finite number >= 0, got {seconds!r}")
        if not math.isfinite(seconds):
            raise ValueError(f"seconds: expected a finite number >= 0, got {seconds!r}")
        exact = Fraction(seconds).limit_denominator(1_000_000) * self.sample_rate / self.hop_length
        return math.floor(exact)

    def num_latents_for_frames(self, num_frames: int, fps: float | int | Fraction) -> int:
        """Latents for the audio of ``num_frames`` video frames at ``fps`` (81 at 16 fps, 44.1 kHz, hop 1024
        -> 218)."""
        return num_audio_latents_for_frames(
            num_frames, fps, sample_rate=self.sample_rate, hop_length=self.hop_length
        )

    # -- validation and conversion -----------------------------------------------------------------

    def check_waveform(self, waveform: object, sample_rate: object) -> None:
        """Raise a typed error unless ``waveform`` is a finite, non-empty ``[B, ch, S]`` and the rate > 0."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive int in Hz, got {sample_rate!r}")
        if not isinstance(waveform, Tensor):
            raise TypeError(
                f"waveform: expected a tensor [B, channels, samples], got {type(waveform).__name__}"
            )
        if waveform.ndim != 3:
            raise ValueError(
                f"waveform: expected rank 3 [B, channels, samples], got shape {tuple(waveform.shape)}"
            )
        if min(waveform.shape) == 0:
            raise SkyReelsError(f"waveform: expected non-empty audio, got shape {tuple(waveform.shape)}")
        if not waveform.is_floating_point():
            raise TypeError(f"waveform: expected a floating tensor, got {waveform.dtype}")
        if not bool(torch.isfinite(waveform).all()):
            raise NonFiniteError("waveform: holds NaN or inf values")

    def check_latents(self, latents: object) -> None:
        """Raise a typed error unless ``latents`` is a finite ``[B, C, L]`` with this codec's C and L >= 1."""
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents: expected a tensor [B, C, L], got {type(latents).__name__}")
        c = self.latent_channels
        if latents.ndim != 3 or latents.shape[1] != c or min(latents.shape) == 0:
            raise ValueError(f"latents: expected [B, {c}, L] with B, L >= 1, got {tuple(latents.shape)}")
        if not latents.is_floating_point():
            raise TypeError(f"latents: expected a floating tensor, got {latents.dtype}")
        if not bool(torch.isfinite(latents).all()):
            raise NonFiniteError("latents: holds NaN or inf values")

    def convert_waveform(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """Validate, resample to the codec's rate and convert to its channel count: ``[B, ch, S']``."""
        self.check_waveform(waveform, sample_rate)
        return convert_channels(
            resample_waveform(waveform, sample_rate, self.sample_rate), self.audio_channels
        )

    def prepare_waveform(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """Validate, resample, convert channels and crop to whole hops: ``[B, audio_channels, L * hop]``."""
        prepared = self.convert_waveform(waveform, sample_rate)
        usable = prepared.shape[-1] // self.hop_length * self.hop_length
        if usable == 0:
            raise SkyReelsError(
                f"waveform: expected at least one hop ({self.hop_length} samples at {self.sample_rate} Hz, "
                f"{self.hop_length / self.sample_rate * 1000:.1f} ms), got {waveform.shape[-1]} samples at "
                f"{sample_rate} Hz"
            )
        return prepared[..., :usable]

    # -- public encode / decode -------------------------------------------------------------------

    def encode(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """``[B, ch, S]`` at ``sample_rate`` -> normalised latents ``[B, C, L]`` (module docstring)."""
        return self._encode_prepared(self.prepare_waveform(waveform, sample_rate))

    def decode(self, latents: Tensor, *, sample_rate: int | None = None) -> Tensor:
        """Normalised latents ``[B, C, L]`` -> waveform ``[B, audio_channels, L * hop]`` at the codec's rate,
        or resampled to ``sample_rate``."""
        self.check_latents(latents)
        waveform = self._decode_latents(latents)
        if sample_rate is None:
            return waveform
        return resample_waveform(waveform, self.sample_rate, sample_rate)

    def _encode_prepared(self, waveform: Tensor) -> Tensor:
        raise NotImplementedError

    def _decode_latents(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    # -- folders ----------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (with ``"class"``) and any weights into ``folder``, atomically."""
        with atomic_folder(folder) as temp:
            self._write_folder(temp)
        return Path(folder)

    #: Settings-only codecs (no weights): the constructor arguments written to and read from
    #: ``config.json`` by the default ``_write_folder`` / ``_read_folder``, and those an older folder
    #: may lack (the constructor's default then applies).
    settings: ClassVar[tuple[str, ...]] = ()
    optional_settings: ClassVar[tuple[str, ...]] = ()

    def _write_folder(self, folder: Path) -> None:
        if not self.settings:
            raise NotImplementedError
        values = {name: getattr(self, name) for name in self.settings}
        atomic_write_json(
            folder / "config.json", {"class": self.class_name, "format_version": FORMAT_VERSION, **values}
        )

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> AudioCodecBase:
        """Load a folder written by :meth:`save_pretrained` of this class, in eval mode."""
        config = read_codec_config(folder, expected_class=cls.class_name)
        codec = cls._read_folder(Path(folder), config).eval()
        if dtype is not None or device is not None:
            codec = codec.to(device=device, dtype=dtype)
        return codec

    @classmethod
    def _read_folder(cls, folder: Path, config: dict[str, Any]) -> AudioCodecBase:
        if not cls.settings:
            raise NotImplementedError
        required = tuple(name for name in cls.settings if name not in cls.optional_settings)
        present = {name: config[name] for name in cls.optional_settings if name in config}
        try:
            return cls(**require_fields(folder, config, required), **present)
        except (TypeError, ValueError) as error:
            raise FileFormatError(folder / "config.json", str(error)) from None


@dataclass(frozen=True, kw_only=True)
class AudioChunkingConfig:
    """Chunked encode/decode of long audio (``skyreels_audio_vae.chunked_encode/decode``).

    Attributes:
        chunk_latents: latents per window (``None``: whole clip at once). Clips of at most this many
            latents are processed whole.
        overlap_latents: latents crossfaded between windows (at most ``chunk_latents // 2``).
    """

    chunk_latents: int | None = None
    overlap_latents: int = 8

    def __post_init__(self) -> None:
        c, o = self.chunk_latents, self.overlap_latents
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(f"AudioChunkingConfig.chunk_latents: expected None or an int >= 1, got {c!r}")
        if isinstance(o, bool) or not isinstance(o, int) or o < 0 or (c is not None and 2 * o > c):
            raise ValueError(
                f"AudioChunkingConfig.overlap_latents: expected an int in [0, chunk_latents // 2], got {o!r}"
            )


class AudioCodec(AudioCodecBase):
    """``skyreels_audio_vae.AudioVAE`` as an audio codec (module docstring); posterior means, normalised
    with the VAE's stored latent statistics."""

    class_name = "AudioCodec"

    def __init__(self, vae: AudioVAE, *, chunking: AudioChunkingConfig | None = None) -> None:
        super().__init__()
        if not isinstance(vae, AudioVAE):
            raise TypeError(f"vae: expected a skyreels_audio_vae.AudioVAE, got {type(vae).__name__}")
        if chunking is not None and not isinstance(chunking, AudioChunkingConfig):
            raise TypeError(f"chunking: expected an AudioChunkingConfig, got {type(chunking).__name__}")
        self.vae = vae
        self.chunking = chunking or AudioChunkingConfig()
        self.sample_rate = vae.config.sample_rate
        self.audio_channels = vae.config.audio_channels
        self.latent_channels = vae.config.latent_channels
        self.hop_length = vae.hop_length

    def _chunked(self, num_latents: int) -> bool:
        return self.chunking.chunk_latents is not None and num_latents > self.chunking.chunk_latents

    def _to_vae(self, tensor: Tensor) -> Tensor:
        parameter = next(self.vae.parameters())
        return tensor.to(device=parameter.device, dtype=parameter.dtype)

    def _encode_prepared(self, waveform: Tensor) -> Tensor:
        waveform = self._to_vae(waveform)
        if not self._chunked(waveform.shape[-1] // self.hop_length):
            return self.vae.encode_normalized(waveform)
        posterior = chunked_encode(
            self.vae,
            waveform,
            chunk_latents=self.chunking.chunk_latents,
            overlap_latents=self.chunking.overlap_latents,
        )
        return self.vae.normalize_latents(posterior.mode())

    def _decode_latents(self, latents: Tensor) -> Tensor:
        latents = self._to_vae(latents)
        if not self._chunked(latents.shape[-1]):
            return self.vae.decode_normalized(latents)
        return chunked_decode(
            self.vae,
            self.vae.denormalize_latents(latents),
            chunk_latents=self.chunking.chunk_latents,
            overlap_latents=self.chunking.overlap_latents,
        )

    def _write_folder(self, folder: Path) -> None:
        save_audio_vae(self.vae, folder / AUDIO_VAE_SUBFOLDER)
        atomic_write_json(
            folder / "config.json",
            {
                "class": self.class_name,
                "format_version": FORMAT_VERSION,
                "subfolder": AUDIO_VAE_SUBFOLDER,
                "chunking": {
                    "chunk_latents": self.chunking.chunk_latents,
                    "overlap_latents": self.chunking.overlap_latents,
                },
            },
        )

    @classmethod
    def _read_folder(cls, folder: Path, config: dict[str, Any]) -> AudioCodec:
        fields = require_fields(folder, config, ("subfolder", "chunking"))
        try:
            vae = load_audio_vae(folder / fields["subfolder"])
            chunking = AudioChunkingConfig(**fields["chunking"])
        except (FileNotFoundError, ValueError, TypeError, KeyError) as error:
            raise FileFormatError(folder, f"cannot load the audio VAE: {error}") from error
        return cls(vae, chunking=chunking)


AUDIO_CODEC_CLASSES = ("AudioCodec", "FrameAudioCodec", "SpectrogramAudioCodec")
"""The class names :func:`load_audio_codec` accepts (an allow-list)."""


def load_audio_codec(
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> AudioCodecBase:
    """Load any of :data:`AUDIO_CODEC_CLASSES` from ``folder`` (dispatch on config.json's ``"class"``)."""
    from skyreels_v4.vae.frame_audio import FrameAudioCodec
    from skyreels_v4.vae.spectrogram_audio import SpectrogramAudioCodec

    registry: dict[str, type[AudioCodecBase]] = {
        "AudioCodec": AudioCodec,
        "FrameAudioCodec": FrameAudioCodec,
        "SpectrogramAudioCodec": SpectrogramAudioCodec,
    }
    config = read_codec_config(folder)
    if config["class"] not in registry:
        raise FileFormatError(
            Path(folder) / "config.json", f"expected class one of {sorted(registry)}, got {config['class']!r}"
        )
    return registry[config["class"]].from_pretrained(folder, dtype=dtype, device=device)
