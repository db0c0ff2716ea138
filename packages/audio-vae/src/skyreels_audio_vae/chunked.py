"""Chunked encode/decode of long audio with crossfaded overlaps, in bounded memory.

Windows tile the latent axis: window ``k`` covers latents ``[k * step, k * step + chunk)`` with
``step = chunk - overlap`` (the last window ends at the clip end and is between ``overlap + 1`` and
``chunk`` latents long). Each window is encoded from (or decoded to) only its own samples, so
peak activation memory is that of a ``chunk``-latent clip, independent of the clip length
(for the tiny preset the largest activation is ``[B, 16, chunk * 1024]`` floats in the first
encoder stage / last decoder stage; a 15 s stereo clip through ``base`` with ``chunk=64`` needs
``B * 128 * 65536 * 4`` bytes = 32 MiB per such tensor instead of 322 MiB for the whole clip).

Consecutive windows overlap by exactly ``overlap`` latents and are blended there with an
equal-gain crossfade ``sin^2 / cos^2`` (weights sum to one): in latent space for encoding, in
sample space (``overlap * hop`` samples) for decoding. Outside the blend regions every output
comes from one window whose nearest interior edge is at least ``overlap`` latents away; if
``overlap`` is at least the receptive radius (:func:`encoder_receptive_radius` /
:func:`decoder_receptive_radius`, in latents) the result equals whole-clip processing there up to
float rounding. Inside a blend region each window's edge error is damped by its fading weight;
with ``overlap >= 2 * radius`` the centre of every blend is exact too. Clip edges match
whole-clip processing because both see the same zero padding there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from skyreels_audio_vae.bottleneck import DiagonalGaussian
from skyreels_audio_vae.conv_blocks import RESIDUAL_KERNEL_SIZE
from skyreels_audio_vae.model import AudioVAE, AudioVAEConfig

__all__ = [
    "chunk_windows",
    "chunked_decode",
    "chunked_encode",
    "decoder_receptive_radius",
    "encoder_receptive_radius",
]


def chunk_windows(num_latents: int, *, chunk_latents: int, overlap_latents: int) -> list[tuple[int, int]]:
    """Latent windows ``[(start, end), ...]`` (module docstring); blend k: ``[start_k, start_k+overlap)``."""
    for name, value, low in (
        ("num_latents", num_latents, 1),
        ("chunk_latents", chunk_latents, 1),
        ("overlap_latents", overlap_latents, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if 2 * overlap_latents > chunk_latents:
        # With more than half a chunk of overlap three windows cover some latents and the
        # crossfade no longer sums to 1 there.
        raise ValueError(
            f"overlap_latents: expected at most chunk_latents // 2 = {chunk_latents // 2} (only two "
            f"chunks may overlap for the crossfade to sum to 1), got {overlap_latents}"
        )
    step = chunk_latents - overlap_latents
    windows = []
    start = 0
    while start + chunk_latents < num_latents:
        windows.append((start, start + chunk_latents))
        start += step
    windows.append((start, num_latents))
    return windows


def _crossfade_weights(length: int, fade_in: int, fade_out: int, like: Tensor) -> Tensor:
    """``[length]`` weights: ``sin^2`` rise over ``fade_in``, 1, ``cos^2`` fall over ``fade_out``."""
    weights = torch.ones(length, dtype=like.dtype, device=like.device)
    for ramp_len, rising in ((fade_in, True), (fade_out, False)):
        if ramp_len == 0:
            continue
        phase = (torch.arange(ramp_len, dtype=torch.float64) + 0.5) / ramp_len * (math.pi / 2)
        ramp = (torch.sin(phase) ** 2 if rising else torch.cos(phase) ** 2).to(weights)
        if rising:
            weights[:ramp_len] *= ramp
        else:
            weights[length - ramp_len :] *= ramp
    return weights


def _overlap_add(
    fn: Callable[[Tensor], Tensor],
    inputs: Tensor,
    *,
    num_latents: int,
    in_per_latent: int,
    out_per_latent: int,
    chunk_latents: int,
    overlap_latents: int,
) -> Tensor:
    windows = chunk_windows(num_latents, chunk_latents=chunk_latents, overlap_latents=overlap_latents)
    output: Tensor | None = None
    for k, (start, end) in enumerate(windows):
        piece = fn(inputs[..., start * in_per_latent : end * in_per_latent])
        expected = (end - start) * out_per_latent
        if piece.shape[-1] != expected:
            raise RuntimeError(f"chunk produced {piece.shape[-1]} frames, expected {expected}")
        if output is None:
            output = piece.new_zeros(*piece.shape[:-1], num_latents * out_per_latent)
        fade_in = overlap_latents * out_per_latent if k > 0 else 0
        fade_out = overlap_latents * out_per_latent if k < len(windows) - 1 else 0
        weights = _crossfade_weights(expected, fade_in, fade_out, piece)
        output[..., start * out_per_latent : end * out_per_latent] += piece * weights
    assert output is not None
    return output


def chunked_encode(
    model: AudioVAE, waveform: Tensor, *, chunk_latents: int = 64, overlap_latents: int = 8
) -> DiagonalGaussian:
    """Posterior over raw latents for ``[B, audio_channels, T]`` (``T`` a multiple of the hop), by chunks.

    The encoder's mean and scale channels are crossfaded before the scale nonlinearity.
    """
    model._check_waveform(waveform)
    hop = model.hop_length
    encoder_output = _overlap_add(
        model.encoder,
        waveform,
        num_latents=waveform.shape[-1] // hop,
        in_per_latent=hop,
        out_per_latent=1,
        chunk_latents=chunk_latents,
        overlap_latents=overlap_latents,
    )
    return model.posterior(encoder_output)


def chunked_decode(
    model: AudioVAE, latents: Tensor, *, chunk_latents: int = 64, overlap_latents: int = 8
) -> Tensor:
    """Raw latents ``[B, C, L]`` -> waveform ``[B, audio_channels, L * hop]``, chunk by chunk."""
    model._check_latents(latents)
    return _overlap_add(
        model.decoder,
        latents,
        num_latents=latents.shape[-1],
        in_per_latent=1,
        out_per_latent=model.hop_length,
        chunk_latents=chunk_latents,
        overlap_latents=overlap_latents,
    )


def encoder_receptive_radius(config: AudioVAEConfig) -> int:
    """Latents on either side of a latent's own samples that can influence it (rounded up)."""
    # Walk an index interval back from one output latent through every layer (kernel k, dilation d,
    # stride s, padding p: output o reads inputs o*s - p ... o*s - p + d*(k-1)).
    j = 10 * len(config.strides) + 10  # any latent far from the clip start
    lo, hi = j - 1, j + 1  # conv_out: kernel 3, padding 1
    for stride in reversed(config.strides):
        pad = math.ceil(stride / 2)
        lo, hi = lo * stride - pad, hi * stride - pad + 2 * stride - 1
        reach = sum(d * (RESIDUAL_KERNEL_SIZE - 1) // 2 for d in config.dilations)
        lo, hi = lo - reach, hi + reach
    lo, hi = lo - 3, hi + 3  # conv_in: kernel 7, padding 3
    hop = config.hop_length
    left, right = j * hop - lo, hi - ((j + 1) * hop - 1)
    return math.ceil(max(left, right) / hop)


def decoder_receptive_radius(config: AudioVAEConfig) -> int:
    """Latents on either side of a sample's own latent that can influence it (rounded up)."""
    hop = config.hop_length
    worst = 0
    for t in range(50 * hop, 51 * hop):  # every phase of a sample within its latent
        lo, hi = t - 3, t + 3  # conv_out: kernel 7, padding 3
        for stride in config.strides:  # decoder blocks, last to first
            reach = sum(d * (RESIDUAL_KERNEL_SIZE - 1) // 2 for d in config.dilations)
            lo, hi = lo - reach, hi + reach
            pad, kernel = math.ceil(stride / 2), 2 * stride
            # transposed conv: output o receives input i when 0 <= o + pad - i*stride < kernel
            lo, hi = math.ceil((lo + pad - kernel + 1) / stride), math.floor((hi + pad) / stride)
        lo, hi = lo - 3, hi + 3  # conv_in: kernel 7, padding 3
        own = t // hop
        worst = max(worst, own - lo, hi - own)
    return worst
