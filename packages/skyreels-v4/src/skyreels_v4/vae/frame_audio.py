"""A zero-training audio codec: the waveform cut into frames of ``hop`` samples, each frame taken to
its orthonormal DCT-II coefficients and divided by a fixed scale (the stand-in for the paper's audio VAE,
section 3.1, where no trained one is at hand).

Shape legend: B batch, ch channels, H hop, L latents (frames), S = L * H samples.

Latents are ``[B, ch * H, L]``: channel ``c * H + k`` holds DCT coefficient ``k`` of audio channel ``c``.
The DCT matrix ``D[k, n] = s_k cos(pi (n + 1/2) k / H)`` (``s_0 = sqrt(1/H)``, else ``sqrt(2/H)``) is
orthonormal, so decoding multiplies by ``D^T``: the inverse is exact up to float rounding (computed in
float64). Defaults: 16 kHz mono, hop 256 (62.5 latents/s, close to the 43 latents/s of the paper's
1024x VAE at 44.1 kHz), scale 0.02 (the RMS of world audio is about 0.01-0.02, so coefficients are
about unit size).

``compression`` (``p`` in (0, 1], default 1 = linear) companders every coefficient: the latent is
``sign(c) |c / scale|^p`` and decoding applies the exact inverse ``sign(y) scale |y|^(1/p)``. World audio is
sparse (silence, then blips a hundred times the median coefficient); with ``p = 1/3`` the latents span a
few units instead of ~80, which the flow's unit-variance noise schedule suits, and small latent errors
near zero decode to nearly silent residuals instead of audible hiss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from skyreels_v4.vae.audio_codec import AudioCodecBase, check_codec_settings

__all__ = ["FrameAudioCodec", "dct_matrix"]


def dct_matrix(size: int) -> Tensor:
    """Orthonormal DCT-II matrix ``[size, size]`` in float64 (rows are frequencies)."""
    n = torch.arange(size, dtype=torch.float64)
    matrix = torch.cos(math.pi * (n[None, :] + 0.5) * n[:, None] / size) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix


class FrameAudioCodec(AudioCodecBase):
    """Exactly invertible framed-DCT codec (module docstring)."""

    class_name = "FrameAudioCodec"
    settings = ("sample_rate", "audio_channels", "hop_length", "latent_scale", "compression")
    optional_settings = ("compression",)  # folders written before companding existed

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        audio_channels: int = 1,
        hop_length: int = 256,
        latent_scale: float = 0.02,
        compression: float = 1.0,
    ) -> None:
        super().__init__()
        check_codec_settings(
            sample_rate=sample_rate,
            audio_channels=audio_channels,
            hop_length=hop_length,
            latent_scale=latent_scale,
            compression=compression,
        )
        self.sample_rate = sample_rate
        self.audio_channels = audio_channels
        self.hop_length = hop_length
        self.latent_channels = audio_channels * hop_length
        self.latent_scale = float(latent_scale)
        self.compression = float(compression)
        self.register_buffer("dct", dct_matrix(hop_length), persistent=False)

    def _apply(self, fn: Any, recurse: bool = True) -> FrameAudioCodec:
        # .to(dtype) must not round the float64 DCT matrix.
        super()._apply(fn, recurse)
        self.dct = dct_matrix(self.hop_length).to(device=self.dct.device)
        return self

    def _encode_prepared(self, waveform: Tensor) -> Tensor:
        frames = rearrange(waveform.to(torch.float64), "b c (l h) -> b c l h", h=self.hop_length)
        coefficients = torch.einsum("bclh,kh->bclk", frames, self.dct.to(waveform.device)) / self.latent_scale
        if self.compression != 1.0:
            coefficients = coefficients.sign() * coefficients.abs().pow(self.compression)
        return rearrange(coefficients, "b c l k -> b (c k) l").to(waveform.dtype)

    def _decode_latents(self, latents: Tensor) -> Tensor:
        coefficients = rearrange(latents.to(torch.float64), "b (c k) l -> b c l k", k=self.hop_length)
        if self.compression != 1.0:
            coefficients = coefficients.sign() * coefficients.abs().pow(1.0 / self.compression)
        frames = torch.einsum("bclk,kh->bclh", coefficients * self.latent_scale, self.dct.to(latents.device))
        return rearrange(frames, "b c l h -> b c (l h)").to(latents.dtype)
