"""Pitch adherence: do the blips sound at the pitches of the shapes in the prompt?

Each detected onset (:func:`detect_onsets`) is analysed over ``[t + offset_s, t + offset_s +
window_s]`` (after the attack): Hann window, zero-padded FFT, strongest bin in ``band_hz``
refined by a parabola on log magnitudes. A tone is *correct* when it lies within
``tolerance_cents`` of the pitch of a shape the prompt contains (circle 440 Hz, square 660 Hz,
triangle 880 Hz; the nearest other pitch is 498 cents away). Reported:

* ``tone_accuracy`` = correct tones / tones (precision-like);
* ``shape_recall`` = prompt shapes (distinct per clip) heard at least once / prompt shapes
  (assumes every object hits a wall, which the default world guarantees);
* ``mean_abs_cents`` = mean |deviation| of each tone from the nearest world pitch (tuning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics import Metric

from skyreels_v4.metrics.inputs import check_audio, check_batch, check_ids
from skyreels_v4.metrics.onsets import OnsetConfig, detect_onsets
from skyreels_v4.world.palette import SHAPE_PITCH_HZ, Shape


@dataclass(frozen=True, kw_only=True)
class PitchConfig:
    """Pitch analysis settings (``sample_rate`` of the audio given to :meth:`PitchAdherence.update`)."""

    sample_rate: int
    tolerance_cents: float = 100.0
    offset_s: float = 0.002
    window_s: float = 0.03
    band_hz: tuple[float, float] = (200.0, 2000.0)
    onsets: OnsetConfig = field(default_factory=OnsetConfig)

    def __post_init__(self) -> None:
        checks = (
            ("sample_rate", isinstance(self.sample_rate, int) and self.sample_rate > 0, "a positive int"),
            ("tolerance_cents", 0 < self.tolerance_cents < 249, "in (0, 249) (half the closest gap)"),
            ("offset_s", self.offset_s >= 0, ">= 0"),
            ("window_s", self.window_s > 0, "> 0"),
            (
                "band_hz",
                0 < self.band_hz[0] < self.band_hz[1] <= self.sample_rate / 2,
                "0 < low < high <= Nyquist",
            ),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"PitchConfig.{name}: expected {expected}, got {getattr(self, name)!r}")


def cents(frequency_hz: np.ndarray, reference_hz: float | np.ndarray) -> np.ndarray:
    """Interval from ``reference_hz`` to ``frequency_hz`` in cents (1200 per octave)."""
    return 1200.0 * np.log2(np.asarray(frequency_hz, dtype=np.float64) / reference_hz)


def tone_pitches(waveform: torch.Tensor, onsets: np.ndarray, config: PitchConfig) -> np.ndarray:
    """Pitch (Hz) of the tone after each onset in a mono ``waveform [S]``; NaN when the
    analysis window does not fit in the clip."""
    rate = config.sample_rate
    length = max(round(config.window_s * rate), 8)
    n_fft = 1 << math.ceil(math.log2(16 * length))
    window = torch.hann_window(length, periodic=False, dtype=waveform.dtype)
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / rate)
    band = np.flatnonzero((freqs >= config.band_hz[0]) & (freqs <= config.band_hz[1]))
    out = np.full(onsets.shape, np.nan)
    for k, onset in enumerate(onsets):
        start = round((onset + config.offset_s) * rate)
        if start < 0 or start + length > waveform.numel():
            continue
        spectrum = torch.fft.rfft(waveform[start : start + length] * window, n=n_fft).abs().double().numpy()
        peak = band[int(np.argmax(spectrum[band]))]
        shift = 0.0
        if 0 < peak < spectrum.size - 1:
            left, mid, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
            curvature = left - 2 * mid + right
            if curvature < 0:
                shift = float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
        out[k] = (peak + shift) * rate / n_fft
    return out


class PitchAdherence(Metric):
    """Tone pitch vs the prompt's shapes; see the module docstring for the three values.

    ``update(audio [B, C, S] in [-1, 1], shape_ids [B, N] int (-1 = no object))``.
    ``compute()`` returns a dict of 0-d float64 tensors (NaN where the denominator is 0).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, config: PitchConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(config, PitchConfig):
            raise TypeError(f"config: expected a PitchConfig, got {type(config).__name__}")
        self.config = config
        for name in ("tones", "tones_correct", "shapes", "shapes_heard", "abs_cents"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, audio: torch.Tensor, shape_ids: torch.Tensor) -> None:
        audio = check_audio(audio)
        shape_ids = check_ids(shape_ids, "shape_ids", len(Shape), audio.shape[0], allow_padding=True)
        check_batch(audio.shape[0], shape_ids=shape_ids)
        world_pitches = np.asarray(SHAPE_PITCH_HZ)
        for b in range(audio.shape[0]):
            mono = audio[b].mean(dim=0)
            onsets = detect_onsets(audio[b], self.config.sample_rate, self.config.onsets)
            pitches = tone_pitches(mono, onsets, self.config)
            pitches = pitches[~np.isnan(pitches)]
            prompt = sorted({int(s) for s in shape_ids[b].tolist() if s >= 0})
            deviation = cents(pitches[:, None], world_pitches[None, :])  # [T, 3]
            within = np.abs(deviation) <= self.config.tolerance_cents
            self.tones += float(pitches.size)
            self.tones_correct += float(within[:, prompt].any(axis=1).sum()) if prompt else 0.0
            self.shapes += float(len(prompt))
            self.shapes_heard += float(within[:, prompt].any(axis=0).sum()) if prompt else 0.0
            self.abs_cents += float(np.abs(deviation).min(axis=1).sum()) if pitches.size else 0.0

    def compute(self) -> dict[str, torch.Tensor]:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return {
            "tone_accuracy": self.tones_correct / self.tones if self.tones > 0 else nan,
            "shape_recall": self.shapes_heard / self.shapes if self.shapes > 0 else nan,
            "mean_abs_cents": self.abs_cents / self.tones if self.tones > 0 else nan,
            "num_tones": self.tones.clone(),
        }
