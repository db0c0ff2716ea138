"""Waveform discriminators for the optional adversarial objective.

- Multi-period discriminator (HiFi-GAN, Kong et al. 2020): the waveform is folded into
  ``[B, C, T / p, p]`` for each period ``p`` (primes 2, 3, 5, 7, 11 by default) and judged by 2D
  convolutions with ``(5, 1)`` kernels, so each sees one phase of a periodic structure.
- Multi-resolution STFT discriminator (EnCodec / DAC style): the complex STFT at several sizes,
  real and imaginary parts as channels ``[B, 2C, frames, freqs]``, judged by 2D convolutions that
  dilate in time and stride in frequency.

Every sub-discriminator returns its logits and the list of intermediate feature maps (for feature
matching). All convolutions are weight-normalised. Shapes: input ``[B, audio_channels, T]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = [
    "AudioDiscriminator",
    "DiscriminatorConfig",
    "DiscriminatorOutput",
    "PeriodDiscriminator",
    "STFTDiscriminator",
]


class DiscriminatorOutput(NamedTuple):
    """``logits`` of any shape ``[B, ...]`` and the feature maps that produced them."""

    logits: Tensor
    features: list[Tensor]


@dataclass(frozen=True, kw_only=True)
class DiscriminatorConfig:
    """Which sub-discriminators to build and their widths (an empty tuple disables a family)."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    stft_fft_sizes: tuple[int, ...] = (2048, 1024, 512)
    stft_channels: int = 32

    def __post_init__(self) -> None:
        if not self.periods and not self.stft_fft_sizes:
            raise ValueError("periods/stft_fft_sizes: expected at least one sub-discriminator, got none")
        if self.periods and not self.period_channels:
            raise ValueError("period_channels: expected at least one width when periods are given")
        for name, values in (
            ("periods", self.periods),
            ("period_channels", self.period_channels),
            ("stft_fft_sizes", self.stft_fft_sizes),
        ):
            if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
                raise ValueError(f"{name}: expected positive ints, got {values!r}")
        if (
            isinstance(self.stft_channels, bool)
            or not isinstance(self.stft_channels, int)
            or self.stft_channels <= 0
        ):
            raise ValueError(f"stft_channels: expected a positive int, got {self.stft_channels!r}")


def _wn_conv2d(in_ch: int, out_ch: int, kernel: tuple[int, int], **kwargs: object) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(in_ch, out_ch, kernel, **kwargs))  # type: ignore[arg-type]


class PeriodDiscriminator(nn.Module):
    """One period of the multi-period discriminator."""

    def __init__(self, period: int, *, audio_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.period = period
        widths = (audio_channels, *channels)
        self.convs = nn.ModuleList(
            _wn_conv2d(
                widths[i],
                widths[i + 1],
                (5, 1),
                stride=(3, 1) if i < len(channels) - 1 else (1, 1),
                padding=(2, 0),
            )
            for i in range(len(channels))
        )
        self.conv_post = _wn_conv2d(widths[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, waveform_BCT: Tensor) -> DiscriminatorOutput:
        b, c, t = waveform_BCT.shape
        extra = (-t) % self.period
        if extra:
            # Reflection needs more samples than the pad; tiny inputs fall back to zeros.
            mode = "reflect" if extra < t else "constant"
            waveform_BCT = F.pad(waveform_BCT, (0, extra), mode=mode)
        x = waveform_BCT.reshape(b, c, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        logits = self.conv_post(x)
        features.append(logits)
        return DiscriminatorOutput(logits, features)


class STFTDiscriminator(nn.Module):
    """One resolution of the multi-resolution STFT discriminator."""

    def __init__(self, n_fft: int, *, audio_channels: int, channels: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList(
            [
                _wn_conv2d(2 * audio_channels, channels, (3, 9), padding=(1, 4)),
                *(
                    _wn_conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4))
                    for d in (1, 2, 4)
                ),
                _wn_conv2d(channels, channels, (3, 3), padding=(1, 1)),
            ]
        )
        self.conv_post = _wn_conv2d(channels, 1, (3, 3), padding=(1, 1))

    def forward(self, waveform_BCT: Tensor) -> DiscriminatorOutput:
        b, c, t = waveform_BCT.shape
        spec = torch.stft(
            waveform_BCT.reshape(b * c, t).float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect" if t > self.n_fft // 2 else "constant",
            return_complex=True,
        )  # [B*C, freqs, frames]
        spec = spec.reshape(b, c, *spec.shape[-2:]).transpose(-1, -2)  # [B, C, frames, freqs]
        x = torch.cat([spec.real, spec.imag], dim=1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        logits = self.conv_post(x)
        features.append(logits)
        return DiscriminatorOutput(logits, features)


class AudioDiscriminator(nn.Module):
    """All sub-discriminators; ``forward`` returns one :class:`DiscriminatorOutput` per sub-discriminator."""

    def __init__(self, config: DiscriminatorConfig, *, audio_channels: int) -> None:
        super().__init__()
        self.config = config
        self.period_discriminators = nn.ModuleList(
            PeriodDiscriminator(p, audio_channels=audio_channels, channels=config.period_channels)
            for p in config.periods
        )
        self.stft_discriminators = nn.ModuleList(
            STFTDiscriminator(n, audio_channels=audio_channels, channels=config.stft_channels)
            for n in config.stft_fft_sizes
        )

    def forward(self, waveform_BCT: Tensor) -> list[DiscriminatorOutput]:
        if waveform_BCT.ndim != 3:
            raise ValueError(f"waveform: expected [B, channels, T], got {tuple(waveform_BCT.shape)}")
        return [d(waveform_BCT) for d in (*self.period_discriminators, *self.stft_discriminators)]
