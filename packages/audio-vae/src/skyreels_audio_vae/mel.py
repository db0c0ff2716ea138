"""Mel filterbank and (log-)mel spectrograms written with ``torch.stft`` (no torchaudio here).

Two mel scales are selectable (``MelScale``):

- ``"slaney"`` (default; librosa's default, Slaney's Auditory Toolbox): linear below 1 kHz,
  ``m = f / (200 / 3)``, logarithmic above, ``m = 15 + 27 * ln(f / 1000) / ln(6.4)``.
- ``"htk"``: ``m = 2595 * log10(1 + f / 700)`` everywhere.

Filters are triangles in *Hz* between ``n_mels + 2`` points equally spaced in mel between
``f_min`` and ``f_max``: filter ``i`` rises from point ``i`` to a peak of 1 at point ``i + 1`` and
falls to 0 at point ``i + 2``. ``norm="slaney"`` rescales filter ``i`` by ``2 / (f_{i+2} - f_i)`` so
each has unit area in Hz (constant energy per band); ``norm=None`` keeps peak 1, and then adjacent
filters sum to exactly 1 between the first and the last centre. This is the same construction as
librosa's ``filters.mel`` (which we cannot install here; the tests check it against an
independent loop-based numpy reference and those properties).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["MelScale", "MelSpectrogram", "hz_to_mel", "mel_filterbank", "mel_to_hz"]

MelScale = Literal["slaney", "htk"]

_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # = 15
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq_hz: Tensor, scale: MelScale = "slaney") -> Tensor:
    """Frequencies in Hz -> mel (float64 in, float64 out recommended)."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq_hz / 700.0)
    if scale == "slaney":
        linear = freq_hz / _SLANEY_F_SP
        log = (
            _SLANEY_MIN_LOG_MEL
            + torch.log(freq_hz.clamp_min(_SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
        )
        return torch.where(freq_hz >= _SLANEY_MIN_LOG_HZ, log, linear)
    raise ValueError(f"scale: expected 'slaney' or 'htk', got {scale!r}")


def mel_to_hz(mel: Tensor, scale: MelScale = "slaney") -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale == "slaney":
        linear = mel * _SLANEY_F_SP
        log = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
        return torch.where(mel >= _SLANEY_MIN_LOG_MEL, log, linear)
    raise ValueError(f"scale: expected 'slaney' or 'htk', got {scale!r}")


def mel_filterbank(
    *,
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "slaney",
    norm: Literal["slaney"] | None = "slaney",
) -> Tensor:
    """Triangular mel filters, float32 ``[n_mels, n_fft // 2 + 1]`` (apply as ``fb @ |STFT|``)."""
    for name, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("n_mels", n_mels)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    f_max = sample_rate / 2 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"f_min/f_max: expected 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, "
            f"got f_min={f_min}, f_max={f_max}"
        )
    if norm not in ("slaney", None):
        raise ValueError(f"norm: expected 'slaney' or None, got {norm!r}")
    fft_freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_lo, mel_hi = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64), scale)
    points_hz = mel_to_hz(
        torch.linspace(float(mel_lo), float(mel_hi), n_mels + 2, dtype=torch.float64), scale
    )
    widths = points_hz[1:] - points_hz[:-1]  # [n_mels + 1]
    offsets = points_hz[:, None] - fft_freqs[None, :]  # [n_mels + 2, n_freqs]
    rising = -offsets[:-2] / widths[:-1, None]  # (f - f_i) / (f_{i+1} - f_i)
    falling = offsets[2:] / widths[1:, None]  # (f_{i+2} - f) / (f_{i+2} - f_{i+1})
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (points_hz[2:] - points_hz[:-2]))[:, None]
    return filters.float()


class MelSpectrogram(nn.Module):
    """Magnitude mel spectrogram of ``[B, channels, T]`` -> ``[B, channels, n_mels, frames]``.

    Hann window of ``n_fft`` samples (periodic), ``center=True`` with reflection padding, magnitude
    (not power) STFT, then the filterbank. ``log`` gives ``log10(clamp(mel, min=eps))``.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        f_min: float = 0.0,
        f_max: float | None = None,
        scale: MelScale = "slaney",
        norm: Literal["slaney"] | None = "slaney",
    ) -> None:
        super().__init__()
        if isinstance(hop_length, bool) or not isinstance(hop_length, int) or hop_length <= 0:
            raise ValueError(f"hop_length: expected a positive int, got {hop_length!r}")
        self.n_fft, self.hop_length = n_fft, hop_length
        fb = mel_filterbank(
            sample_rate=sample_rate,
            n_fft=n_fft,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            scale=scale,
            norm=norm,
        )
        self.register_buffer("filterbank", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, waveform_BCT: Tensor) -> Tensor:
        if waveform_BCT.ndim != 3:
            raise ValueError(f"waveform: expected [B, channels, T], got {tuple(waveform_BCT.shape)}")
        b, c, t = waveform_BCT.shape
        spec = torch.stft(
            waveform_BCT.reshape(b * c, t).float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        mel = torch.matmul(self.filterbank, spec)
        return mel.reshape(b, c, *mel.shape[-2:])

    def log(self, waveform_BCT: Tensor, *, eps: float = 1e-5) -> Tensor:
        """``log10(clamp(mel, eps))``, ``[B, channels, n_mels, frames]``."""
        return torch.log10(self(waveform_BCT).clamp_min(eps))
