"""Weight-free audio measurements of paper 3.4.2 (quality filtering and VAD), on mono float audio.

* ``mean_volume_db``: 10·log10(mean x²) in dBFS (ffmpeg's volumedetect "mean_volume").
* ``clipping_ratio``: share of samples at full scale (|x| >= 0.999).
* ``bandwidth_hz``: highest frequency whose long-term power is within ``floor_db`` of the peak.
* ``snr_db``: spectral-floor estimate: in each 32 ms frame the noise is taken as flat at the median
  bin power (speech, music and effects occupy few bins, broadband noise all of them); SNR is the
  ratio of the remaining power to that floor, summed over frames louder than -70 dBFS; the median
  is taken over the bins below ``bandwidth_hz`` (upsampled audio has empty bins above it). White noise
  scores about -3.6 dB, a clean tone or clean speech well above 10 dB.
* ``speech_fraction``: share of the clip silero-vad marks as speech (model shipped in its wheel).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "bandwidth_hz",
    "clipping_ratio",
    "frame_spectra",
    "mean_volume_db",
    "snr_db",
    "speech_fraction",
]

_FLOOR = 1e-20


def mean_volume_db(audio: np.ndarray) -> float:
    return (
        float(10 * np.log10(float(np.mean(np.square(audio, dtype=np.float64))) + _FLOOR))
        if audio.size
        else -200.0
    )


def clipping_ratio(audio: np.ndarray, level: float = 0.999) -> float:
    return float(np.mean(np.abs(audio) >= level)) if audio.size else 0.0


def frame_spectra(audio: np.ndarray, sample_rate: int, frame_s: float = 0.032) -> np.ndarray:
    """Power spectra ``[frames, bins]`` of Hann-windowed, half-overlapping frames."""
    size = max(16, int(sample_rate * frame_s))
    hop = size // 2
    if audio.size < size:
        audio = np.pad(audio, (0, size - audio.size))
    count = 1 + (audio.size - size) // hop
    index = np.arange(size)[None, :] + hop * np.arange(count)[:, None]
    frames = audio[index].astype(np.float64) * np.hanning(size)[None, :]
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


def bandwidth_hz(audio: np.ndarray, sample_rate: int, floor_db: float = 60.0) -> float:
    power = frame_spectra(audio, sample_rate).mean(axis=0)
    if power.max() <= _FLOOR:
        return 0.0
    above = np.nonzero(10 * np.log10(power / power.max() + _FLOOR) > -floor_db)[0]
    return float(above[-1] * sample_rate / (2 * (power.size - 1)))


def snr_db(audio: np.ndarray, sample_rate: int, active_db: float = -70.0) -> float:
    power = frame_spectra(audio, sample_rate)
    size = 2 * (power.shape[1] - 1)
    # mean square of a Hann-windowed frame from its spectrum (Parseval), to pick frames with sound
    frame_db = 10 * np.log10(power.sum(axis=1) / (size * size * 0.375) * 2 + _FLOOR)
    active = power[frame_db > active_db]
    if not len(active):
        return 0.0
    # the floor is looked for below the effective bandwidth: resampled material has empty bins above
    top = 1 + int(np.ceil(bandwidth_hz(audio, sample_rate) * 2 * (power.shape[1] - 1) / sample_rate))
    noise = np.median(active[:, : max(top, 8)], axis=1) * active.shape[1]
    signal = np.maximum(active.sum(axis=1) - noise, 0.0)
    return float(10 * np.log10((signal.sum() + _FLOOR) / (noise.sum() + _FLOOR)))


@functools.cache
def _silero():
    from silero_vad import load_silero_vad

    return load_silero_vad()


def speech_fraction(audio: np.ndarray, sample_rate: int) -> float:
    """Share of ``audio`` that silero-vad marks as speech (resampled to 16 kHz first)."""
    import torch
    from scipy.signal import resample_poly
    from silero_vad import get_speech_timestamps

    if audio.size == 0:
        return 0.0
    if sample_rate != 16000:
        g = np.gcd(16000, sample_rate)
        audio = resample_poly(audio.astype(np.float64), 16000 // g, sample_rate // g)
    wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    with torch.no_grad():
        spans = get_speech_timestamps(wave, _silero(), sampling_rate=16000)
    return float(sum(s["end"] - s["start"] for s in spans) / wave.numel())
