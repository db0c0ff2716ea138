"""Synthesise a scene's sound: a blip at every (sounded) wall hit, and an optional low drone.

A blip that starts at ``t0`` is ``a · min(τ / attack, 1) · exp(-τ / decay) · sin(2π f τ)`` with
``τ = t - t0`` for ``0 <= τ < duration``, evaluated on the sample grid with the exact ``t0``,
so its onset has sub-sample precision. ``f`` is the shape's pitch (circle 440 Hz, square 660 Hz,
triangle 880 Hz). In stereo a blip is panned with constant power by the object's x position.
The drone ("background music") is two quiet partials, ``drone_hz`` and a fifth above, with a
slow swell and 20 ms fades at both ends.
"""

from __future__ import annotations

import math

import numpy as np

from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.physics import WorldTruth, positions_at
from skyreels_v4.world.scene import Scene

_DRONE_FADE_S = 0.02
_DRONE_SWELL_HZ = 0.25


def blip(tau: np.ndarray, pitch_hz: float, config: WorldConfig) -> np.ndarray:
    """One blip sampled at times ``tau`` (seconds since its onset; 0 outside ``[0, duration)``)."""
    tau = np.asarray(tau, dtype=np.float64)
    envelope = np.minimum(tau / config.tone_attack_s, 1.0) * np.exp(-tau / config.tone_decay_s)
    inside = (tau >= 0) & (tau < config.tone_duration_s)
    return np.where(inside, config.tone_amplitude * envelope * np.sin(2 * math.pi * pitch_hz * tau), 0.0)


def render_audio(scene: Scene, truth: WorldTruth, config: WorldConfig) -> np.ndarray:
    """The clip's waveform ``[C, S]`` float32 in [-1, 1] (``C = audio_channels``, ``S = num_samples``)."""
    rate = config.sample_rate
    num_samples = config.num_samples
    out = np.zeros((config.audio_channels, num_samples), dtype=np.float64)

    keep = truth.hit_sounded
    onsets = truth.hit_times[keep]
    objects = truth.hit_objects[keep]
    if onsets.size:
        length = math.ceil(config.tone_duration_s * rate)
        first = np.ceil(onsets * rate).astype(np.int64)
        index = first[:, None] + np.arange(length)[None, :]  # [K, length]
        tau = index / rate - onsets[:, None]
        pitch = np.array([scene.objects[n].shape.pitch_hz for n in objects])[:, None]
        waves = np.zeros_like(tau)  # [K, length]
        for p in np.unique(pitch):
            rows = pitch[:, 0] == p
            waves[rows] = blip(tau[rows], float(p), config)
        if config.audio_channels == 2:
            x = positions_at(scene, onsets)[np.arange(onsets.size), objects, 0]
            gains = np.stack([np.cos(0.5 * math.pi * x), np.sin(0.5 * math.pi * x)], axis=1)  # [K, 2]
        else:
            gains = np.ones((onsets.size, 1))
        valid = index < num_samples
        for channel in range(config.audio_channels):
            np.add.at(out[channel], index[valid], (waves * gains[:, channel : channel + 1])[valid])

    if scene.has_bgm:
        out += drone(num_samples, config)[None, :]
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def drone(num_samples: int, config: WorldConfig) -> np.ndarray:
    """The background drone ``[num_samples]`` float64, peak at most ``2 · drone_amplitude``."""
    t = np.arange(num_samples, dtype=np.float64) / config.sample_rate
    swell = 0.75 + 0.25 * np.sin(2 * math.pi * _DRONE_SWELL_HZ * t)
    tone = np.sin(2 * math.pi * config.drone_hz * t) + np.sin(2 * math.pi * 1.5 * config.drone_hz * t)
    duration = num_samples / config.sample_rate
    fade = np.clip(np.minimum(t, duration - t) / _DRONE_FADE_S, 0.0, 1.0)
    return config.drone_amplitude * swell * fade * tone
