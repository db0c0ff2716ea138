"""Tone onsets heard in a waveform: band-limited spectral-flux onset detection.

The (channel-averaged) waveform is analysed with a short STFT (``window_s``, hop ``hop_s``,
Hann). The *band amplitude* of frame ``k`` is ``a_k = sqrt(Σ_band |X_k|²)`` over
``band_hz`` (the blips' range; the drone lies below it), with ``X`` scaled so that a sine of
amplitude ``A`` peaks at ``A``. The onset strength is the half-wave rectified flux
``o_k = max(a_k - a_{k-1}, 0)``; onsets are the local maxima of ``o`` over
``± min_separation_s`` that exceed ``max(relative_threshold · max_k o_k, absolute_threshold)``.
A peak's time is refined by a parabola through it and its neighbours. With a centred STFT
the flux of a sharp attack peaks when the attack reaches the window's middle, so the times need
no latency correction (measured bias on the world's blips: see docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True)
class OnsetConfig:
    """Onset detector settings (times in seconds, amplitudes in waveform units)."""

    window_s: float = 0.008
    hop_s: float = 0.001
    band_hz: tuple[float, float] = (300.0, 5000.0)
    min_separation_s: float = 0.03
    relative_threshold: float = 0.2
    absolute_threshold: float = 0.01

    def __post_init__(self) -> None:
        lo, hi = self.band_hz
        checks = (
            ("window_s", self.window_s > 0, "> 0"),
            ("hop_s", 0 < self.hop_s <= self.window_s, "in (0, window_s]"),
            ("band_hz", 0 <= lo < hi, "0 <= low < high"),
            ("min_separation_s", self.min_separation_s >= self.hop_s, ">= hop_s"),
            ("relative_threshold", 0 <= self.relative_threshold <= 1, "in [0, 1]"),
            ("absolute_threshold", self.absolute_threshold > 0, "> 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"OnsetConfig.{name}: expected {expected}, got {getattr(self, name)!r}")


def band_amplitude(waveform: torch.Tensor, sample_rate: int, config: OnsetConfig) -> torch.Tensor:
    """Band amplitude ``[T]`` of a mono ``waveform [S]``; frame ``k`` is centred at ``k · hop``."""
    n_fft = max(round(config.window_s * sample_rate), 16)
    hop = max(round(config.hop_s * sample_rate), 1)
    window = torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype)
    spectrum = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=hop,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    freqs = torch.fft.rfftfreq(n_fft, d=1.0 / sample_rate).to(waveform.dtype)
    band = (freqs >= config.band_hz[0]) & (freqs <= config.band_hz[1])
    scale = 2.0 / window.sum()
    return (spectrum[band].abs().square().sum(dim=0)).sqrt() * scale


def detect_onsets(audio: torch.Tensor, sample_rate: int, config: OnsetConfig) -> np.ndarray:
    """Onset times (seconds, sorted) of one clip ``audio [C, S]`` in [-1, 1]."""
    hop_s = max(round(config.hop_s * sample_rate), 1) / sample_rate
    amplitude = band_amplitude(audio.mean(dim=0), sample_rate, config)
    flux = torch.diff(amplitude, prepend=amplitude[:1]).clamp(min=0)
    if flux.numel() < 3:
        return np.zeros(0)
    radius = max(round(config.min_separation_s / hop_s), 1)
    local_max = F.max_pool1d(flux.view(1, 1, -1), 2 * radius + 1, stride=1, padding=radius).view(-1)
    threshold = max(config.relative_threshold * float(flux.max()), config.absolute_threshold)
    flux_np = flux.double().numpy()
    peaks = np.flatnonzero((flux == local_max).numpy() & (flux_np >= threshold))
    # Plateaus give several equal maxima within one window: keep the first of each.
    if peaks.size:
        peaks = peaks[np.concatenate([[True], np.diff(peaks) > radius])]
    times = []
    for k in peaks:
        shift = 0.0
        if 0 < k < flux_np.size - 1:
            left, mid, right = flux_np[k - 1], flux_np[k], flux_np[k + 1]
            curvature = left - 2 * mid + right
            if curvature < 0:
                shift = float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
        times.append((k + shift) * hop_s)
    return np.asarray(times, dtype=np.float64)


def band_activity(
    audio: torch.Tensor, sample_rate: int, config: OnsetConfig, *, relative: float = 0.1
) -> float:
    """Fraction of the STFT frames of one clip ``audio [C, S]`` whose band amplitude (the blips' band,
    ``band_amplitude``) exceeds ``relative`` times the clip's largest: about the blips' share of the time
    for blips on silence, near 1 for a sound that never stops. 0 for a silent clip."""
    if not 0 < relative < 1:
        raise ValueError(f"relative: expected a number in (0, 1), got {relative!r}")
    amplitude = band_amplitude(audio.mean(dim=0), sample_rate, config)
    peak = float(amplitude.max()) if amplitude.numel() else 0.0
    if peak <= config.absolute_threshold:
        return 0.0
    return float((amplitude > relative * peak).double().mean())
