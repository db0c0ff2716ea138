"""The convolutional waveform encoder and decoder (Oobleck/DAC layout, see ``conv_blocks.py``).

Widths: ``widths = [base] + [base * m for m in channel_multipliers]``; encoder block ``i`` maps
``widths[i] -> widths[i + 1]`` and downsamples by ``strides[i]``; the decoder mirrors it. This is
Oobleck's ``c_mults = [1] + c_mults`` convention, so its configs translate field for field.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from skyreels_audio_vae.conv_blocks import DecoderBlock, EncoderBlock, weight_normed_conv1d
from skyreels_audio_vae.snake import Snake

__all__ = ["WaveformDecoder", "WaveformEncoder", "block_widths"]


def block_widths(base_channels: int, channel_multipliers: Sequence[int]) -> list[int]:
    """Channel widths at the input of each block plus the bottom width: ``[base, base*m_0, ...]``."""
    return [base_channels] + [base_channels * m for m in channel_multipliers]


class WaveformEncoder(nn.Module):
    """Waveform ``[B, audio_channels, T]`` -> encoder output ``[B, out_channels, T / prod(strides)]``."""

    def __init__(
        self,
        *,
        audio_channels: int,
        base_channels: int,
        channel_multipliers: Sequence[int],
        strides: Sequence[int],
        dilations: Sequence[int],
        out_channels: int,
    ) -> None:
        super().__init__()
        widths = block_widths(base_channels, channel_multipliers)
        self.conv_in = weight_normed_conv1d(audio_channels, widths[0], 7, padding=3)
        self.blocks = nn.ModuleList(
            EncoderBlock(widths[i], widths[i + 1], stride=s, dilations=dilations)
            for i, s in enumerate(strides)
        )
        self.snake_out = Snake(widths[-1])
        self.conv_out = weight_normed_conv1d(widths[-1], out_channels, 3, padding=1)

    def forward(self, waveform_BCT: Tensor) -> Tensor:
        x = self.conv_in(waveform_BCT)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(self.snake_out(x))


class WaveformDecoder(nn.Module):
    """Latents ``[B, latent_channels, L]`` -> waveform ``[B, audio_channels, L * prod(strides)]``."""

    def __init__(
        self,
        *,
        audio_channels: int,
        base_channels: int,
        channel_multipliers: Sequence[int],
        strides: Sequence[int],
        dilations: Sequence[int],
        latent_channels: int,
        final_tanh: bool,
    ) -> None:
        super().__init__()
        widths = block_widths(base_channels, channel_multipliers)
        self.conv_in = weight_normed_conv1d(latent_channels, widths[-1], 7, padding=3)
        self.blocks = nn.ModuleList(
            DecoderBlock(widths[i + 1], widths[i], stride=strides[i], dilations=dilations)
            for i in reversed(range(len(strides)))
        )
        self.snake_out = Snake(widths[0])
        # No bias on the output conv (Oobleck): a DC offset is never useful in a waveform.
        self.conv_out = weight_normed_conv1d(widths[0], audio_channels, 7, padding=3, bias=False)
        self.final_tanh = final_tanh

    def forward(self, latents_BCL: Tensor) -> Tensor:
        x = self.conv_in(latents_BCL)
        for block in self.blocks:
            x = block(x)
        x = self.conv_out(self.snake_out(x))
        return torch.tanh(x) if self.final_tanh else x
