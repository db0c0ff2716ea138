"""The 44.1 kHz waveform VAE: config, presets, encode/decode and latent normalisation.

Shapes: waveforms ``[B, audio_channels, T]`` with ``T`` a multiple of ``hop_length``; latents
``[B, latent_channels, L]`` with ``L = T / hop_length`` (ARCHITECTURE.md section 3). With the default
hop of 1024 at 44.1 kHz there are 43.07 latents per second: 81 video frames at 16 fps -> 218 latents
(see ``time_alignment.py`` for the rounding convention).

Latent normalisation: the diffusion model sees ``(z - latent_mean) / latent_std`` per channel
(like the Wan video VAE), so that the latents it generates have unit scale. The statistics are
buffers saved with the weights; they start at mean 0 / std 1 and are set after training with
:meth:`AudioVAE.set_latent_statistics` (see ``latent_statistics.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from skyreels_audio_vae.bottleneck import DiagonalGaussian, ScaleParameterization
from skyreels_audio_vae.codec import WaveformDecoder, WaveformEncoder
from skyreels_audio_vae.finite_checks import check_finite

__all__ = ["AudioVAE", "AudioVAEConfig", "AudioVAEOutput", "AudioVAEPreset", "audio_vae_preset"]

AudioVAEPreset = Literal["tiny", "base", "stable_audio_open"]


def _positive_ints(name: str, values: tuple[int, ...]) -> None:
    if not isinstance(values, tuple) or not values:
        raise ValueError(f"{name}: expected a non-empty tuple of positive ints, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a non-empty tuple of positive ints, got {values!r}")


@dataclass(frozen=True, kw_only=True)
class AudioVAEConfig:
    """Architecture of :class:`AudioVAE`. Field names map one to one onto recipe YAML.

    ``channel_multipliers[i]`` is the width multiplier after block ``i`` (Oobleck's ``c_mults``);
    ``strides`` must be even and their product is the hop length (default 2*4*8*16 = 1024).
    """

    sample_rate: int = 44100
    audio_channels: int = 1
    encoder_channels: int = 64
    decoder_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 8)
    strides: tuple[int, ...] = (2, 4, 8, 16)
    dilations: tuple[int, ...] = (1, 3, 9)
    latent_channels: int = 64
    scale_parameterization: ScaleParameterization = "softplus"
    final_tanh: bool = False

    def __post_init__(self) -> None:
        for name in ("sample_rate", "audio_channels", "encoder_channels", "decoder_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if isinstance(self.latent_channels, bool) or not isinstance(self.latent_channels, int):
            raise ValueError(f"latent_channels: expected a positive int, got {self.latent_channels!r}")
        if self.latent_channels <= 0:
            raise ValueError(f"latent_channels: expected a positive int, got {self.latent_channels!r}")
        _positive_ints("channel_multipliers", self.channel_multipliers)
        _positive_ints("strides", self.strides)
        _positive_ints("dilations", self.dilations)
        if len(self.channel_multipliers) != len(self.strides):
            raise ValueError(
                "channel_multipliers: expected one entry per stride "
                f"({len(self.strides)}), got {len(self.channel_multipliers)}"
            )
        if any(s % 2 for s in self.strides):
            raise ValueError(f"strides: expected even strides (exact length bookkeeping), got {self.strides}")
        if self.scale_parameterization not in ("softplus", "exp"):
            raise ValueError(
                f"scale_parameterization: expected 'softplus' or 'exp', got {self.scale_parameterization!r}"
            )

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent (product of the strides)."""
        return math.prod(self.strides)

    @property
    def latent_rate(self) -> float:
        """Latents per second (43.07 at 44.1 kHz with hop 1024)."""
        return self.sample_rate / self.hop_length


def audio_vae_preset(name: AudioVAEPreset) -> AudioVAEConfig:
    """Named configurations.

    - ``tiny``: mono, widths 16..128, 16 latent channels, hop 1024; CPU tests and the quickstart.
    - ``base``: stereo, widths 128..1024, 64 latent channels, hop 1024 (the SkyReels-V4 audio VAE
      shape: 218 latents for 81 frames at 16 fps).
    - ``stable_audio_open``: Stable Audio Open 1.0's Oobleck (stereo, widths 128..2048, strides
      2,4,4,8,8 = 2048x, 64 latent channels); load its weights with ``oobleck.py``.
    """
    if name == "tiny":
        return AudioVAEConfig(
            audio_channels=1,
            encoder_channels=16,
            decoder_channels=16,
            channel_multipliers=(1, 2, 4, 8),
            latent_channels=16,
        )
    if name == "base":
        return AudioVAEConfig(
            audio_channels=2,
            encoder_channels=128,
            decoder_channels=128,
            channel_multipliers=(1, 2, 4, 8),
            latent_channels=64,
        )
    if name == "stable_audio_open":
        return AudioVAEConfig(
            audio_channels=2,
            encoder_channels=128,
            decoder_channels=128,
            channel_multipliers=(1, 2, 4, 8, 16),
            strides=(2, 4, 4, 8, 8),
            latent_channels=64,
            scale_parameterization="softplus",
            final_tanh=False,
        )
    raise ValueError(f"name: expected one of 'tiny', 'base', 'stable_audio_open', got {name!r}")


class AudioVAEOutput(NamedTuple):
    """``reconstruction`` [B, audio_channels, T]; ``latents`` [B, C, L] (raw, what was decoded)."""

    reconstruction: Tensor
    posterior: DiagonalGaussian
    latents: Tensor


class AudioVAE(nn.Module):
    """Waveform VAE: ``encode`` -> :class:`DiagonalGaussian`, ``decode`` latents -> waveform."""

    def __init__(self, config: AudioVAEConfig) -> None:
        super().__init__()
        if not isinstance(config, AudioVAEConfig):
            raise TypeError(f"config: expected AudioVAEConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = WaveformEncoder(
            audio_channels=config.audio_channels,
            base_channels=config.encoder_channels,
            channel_multipliers=config.channel_multipliers,
            strides=config.strides,
            dilations=config.dilations,
            out_channels=2 * config.latent_channels,
        )
        self.decoder = WaveformDecoder(
            audio_channels=config.audio_channels,
            base_channels=config.decoder_channels,
            channel_multipliers=config.channel_multipliers,
            strides=config.strides,
            dilations=config.dilations,
            latent_channels=config.latent_channels,
            final_tanh=config.final_tanh,
        )
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    # -- checks -------------------------------------------------------------------------------

    def _check_waveform(self, waveform: Tensor) -> None:
        c = self.config
        if not isinstance(waveform, Tensor) or waveform.ndim != 3 or waveform.shape[1] != c.audio_channels:
            shape = tuple(waveform.shape) if isinstance(waveform, Tensor) else type(waveform).__name__
            raise ValueError(f"waveform: expected [B, {c.audio_channels}, T], got {shape}")
        samples = waveform.shape[-1]
        if samples == 0 or samples % c.hop_length:
            raise ValueError(
                f"waveform: expected a positive multiple of hop_length={c.hop_length} samples, got "
                f"{samples} (crop or pad first, e.g. skyreels_audio_vae.pad_to_hop_multiple)"
            )
        check_finite(waveform, "waveform")

    def _check_latents(self, latents: Tensor, name: str = "latents") -> None:
        c = self.config
        if not isinstance(latents, Tensor) or latents.ndim != 3 or latents.shape[1] != c.latent_channels:
            shape = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
            raise ValueError(f"{name}: expected [B, {c.latent_channels}, L], got {shape}")
        if latents.shape[-1] == 0:
            raise ValueError(f"{name}: expected at least one latent frame, got L=0")
        check_finite(latents, name)

    # -- raw latent space ------------------------------------------------------------------------

    def encoder_output(self, waveform: Tensor) -> Tensor:
        """The encoder's raw ``[B, 2C, L]`` (mean and scale channels) for ``[B, audio_channels, T]``."""
        self._check_waveform(waveform)
        return self.encoder(waveform)

    def posterior(self, encoder_output: Tensor) -> DiagonalGaussian:
        """The posterior from a raw ``[B, 2C, L]`` encoder output."""
        return DiagonalGaussian.from_encoder_output(encoder_output, self.config.scale_parameterization)

    def encode(self, waveform: Tensor) -> DiagonalGaussian:
        """``[B, audio_channels, T]`` -> posterior over raw latents ``[B, C, T / hop_length]``."""
        return self.posterior(self.encoder_output(waveform))

    def decode(self, latents: Tensor) -> Tensor:
        """Raw latents ``[B, C, L]`` -> waveform ``[B, audio_channels, L * hop_length]``."""
        self._check_latents(latents)
        return self.decoder(latents)

    def forward(
        self,
        waveform: Tensor,
        *,
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
    ) -> AudioVAEOutput:
        """Encode, sample (or take the mean), decode. Shapes as in :class:`AudioVAEOutput`."""
        posterior = self.encode(waveform)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        return AudioVAEOutput(self.decoder(latents), posterior, latents)

    # -- normalised latent space (what the diffusion model sees) --------------------------------

    def normalize_latents(self, latents: Tensor) -> Tensor:
        """``(z - latent_mean) / latent_std`` per channel; [B, C, L] -> [B, C, L]."""
        self._check_latents(latents)
        return (latents - self.latent_mean[:, None].to(latents)) / self.latent_std[:, None].to(latents)

    def denormalize_latents(self, latents: Tensor) -> Tensor:
        """Inverse of :meth:`normalize_latents`."""
        self._check_latents(latents)
        return latents * self.latent_std[:, None].to(latents) + self.latent_mean[:, None].to(latents)

    def encode_normalized(
        self, waveform: Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Normalised latents ``[B, C, L]`` (posterior mean unless ``sample``)."""
        posterior = self.encode(waveform)
        latents = posterior.sample(generator) if sample else posterior.mode()
        return self.normalize_latents(latents)

    def decode_normalized(self, latents: Tensor) -> Tensor:
        """Normalised latents ``[B, C, L]`` -> waveform ``[B, audio_channels, L * hop_length]``."""
        return self.decode(self.denormalize_latents(latents))

    @torch.no_grad()
    def set_latent_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Store per-channel latent mean and std (each ``[C]``, std > 0)."""
        c = self.config.latent_channels
        for name, value in (("mean", mean), ("std", std)):
            if not isinstance(value, Tensor) or tuple(value.shape) != (c,):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{name}: expected a tensor of shape ({c},), got {shape}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: expected finite values")
        if (std <= 0).any():
            raise ValueError(f"std: expected strictly positive values, got min {std.min().item():.3g}")
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std)
