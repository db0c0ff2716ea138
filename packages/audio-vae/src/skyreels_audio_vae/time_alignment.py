"""Video frames <-> audio samples <-> audio latents: lengths and alignment, in exact arithmetic.

A clip of ``F`` frames at ``fps`` lasts ``F / fps`` seconds, i.e. ``F * sample_rate / fps`` samples
(a rational number: 81 frames at 16 fps and 44.1 kHz = 223256.25 samples) and
``F * sample_rate / (fps * hop_length)`` latents (= 218.02 for hop 1024; the paper's 218).

Rounding convention (default ``"floor"``): a clip gets the whole latents it fully covers,
``L = floor(F * sample_rate / (fps * hop))``, and its audio is the first ``L * hop`` samples. A latent
therefore never describes sound after the last frame; the dropped tail is shorter than one latent
(23.2 ms at 44.1 kHz / 1024). ``"nearest"`` and ``"ceil"`` are available where a caller prefers
them (``"ceil"`` pads the audio with up to one latent of silence). The inverse,
:func:`num_frames_for_audio_latents`, returns the fewest frames whose floor-latents cover ``L``;
``num_frames_for_audio_latents(num_audio_latents_for_frames(F)) == F`` whenever latents are at
least as dense as frames (any fps <= 43.07 at 44.1 kHz / 1024).

``fps`` may be an int, a :class:`fractions.Fraction` (e.g. ``Fraction(24000, 1001)``) or a float,
which is converted with ``Fraction(fps).limit_denominator(1_000_000)`` (so 29.97 is 2997/100).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Rounding",
    "audio_latent_index_for_frame",
    "audio_latent_times",
    "audio_samples_for_frames",
    "crop_to_hop_multiple",
    "num_audio_latents_for_frames",
    "num_audio_latents_for_samples",
    "num_audio_samples_for_frames",
    "num_frames_for_audio_latents",
    "pad_to_hop_multiple",
]

Rounding = Literal["floor", "nearest", "ceil"]


def _rate(name: str, value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise ValueError(f"{name}: expected a positive int, float or Fraction, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        value = Fraction(value).limit_denominator(1_000_000)
    rate = Fraction(value)
    if rate <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return rate


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    return value


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _round(value: Fraction, rounding: Rounding) -> int:
    if rounding == "floor":
        return math.floor(value)
    if rounding == "ceil":
        return math.ceil(value)
    if rounding == "nearest":
        return math.floor(value + Fraction(1, 2))  # halves round up, deterministically
    raise ValueError(f"rounding: expected 'floor', 'nearest' or 'ceil', got {rounding!r}")


def audio_samples_for_frames(num_frames: int, fps: int | float | Fraction, sample_rate: int) -> Fraction:
    """Exact number of audio samples spanned by ``num_frames`` video frames (e.g. 223256.25)."""
    return _count("num_frames", num_frames) * _positive_int("sample_rate", sample_rate) / _rate("fps", fps)


def num_audio_samples_for_frames(
    num_frames: int, fps: int | float | Fraction, sample_rate: int, *, rounding: Rounding = "floor"
) -> int:
    """Integer sample count for ``num_frames`` frames (81 at 16 fps, 44.1 kHz -> 223256)."""
    return _round(audio_samples_for_frames(num_frames, fps, sample_rate), rounding)


def num_audio_latents_for_samples(num_samples: int, hop_length: int, *, rounding: Rounding = "floor") -> int:
    """Latents for ``num_samples`` samples at ``hop_length`` samples per latent."""
    return _round(
        Fraction(_count("num_samples", num_samples), _positive_int("hop_length", hop_length)), rounding
    )


def num_audio_latents_for_frames(
    num_frames: int,
    fps: int | float | Fraction,
    *,
    sample_rate: int = 44100,
    hop_length: int = 1024,
    rounding: Rounding = "floor",
) -> int:
    """Audio latents for a clip of ``num_frames`` frames (81 at 16 fps -> 218; module docstring)."""
    exact = audio_samples_for_frames(num_frames, fps, sample_rate) / _positive_int("hop_length", hop_length)
    return _round(exact, rounding)


def num_frames_for_audio_latents(
    num_latents: int, fps: int | float | Fraction, *, sample_rate: int = 44100, hop_length: int = 1024
) -> int:
    """Fewest video frames whose (floor) latent count is at least ``num_latents`` (218 -> 81 at 16 fps)."""
    latents = _count("num_latents", num_latents)
    frames = (
        latents
        * _positive_int("hop_length", hop_length)
        * _rate("fps", fps)
        / _positive_int("sample_rate", sample_rate)
    )
    return math.ceil(frames)


def audio_latent_index_for_frame(
    frame_index: int, fps: int | float | Fraction, *, sample_rate: int = 44100, hop_length: int = 1024
) -> int:
    """Index of the audio latent containing the instant frame ``frame_index`` starts (``index / fps`` s)."""
    seconds = _count("frame_index", frame_index) / _rate("fps", fps)
    return math.floor(
        seconds * _positive_int("sample_rate", sample_rate) / _positive_int("hop_length", hop_length)
    )


def audio_latent_times(
    num_latents: int,
    *,
    sample_rate: int = 44100,
    hop_length: int = 1024,
    anchor: Literal["start", "center"] = "start",
) -> Tensor:
    """Time in seconds of each latent, float64 ``[num_latents]``: its first sample or its centre."""
    n = _count("num_latents", num_latents)
    if anchor not in ("start", "center"):
        raise ValueError(f"anchor: expected 'start' or 'center', got {anchor!r}")
    offset = 0.5 if anchor == "center" else 0.0
    step = float(_positive_int("hop_length", hop_length) / _positive_int("sample_rate", sample_rate))
    return (torch.arange(n, dtype=torch.float64) + offset) * step


def pad_to_hop_multiple(waveform: Tensor, hop_length: int) -> Tensor:
    """Right-pad ``[..., T]`` with zeros to the next multiple of ``hop_length`` (no-op if already one)."""
    hop = _positive_int("hop_length", hop_length)
    if not isinstance(waveform, Tensor) or waveform.ndim < 1:
        raise ValueError("waveform: expected a tensor [..., T]")
    extra = (-waveform.shape[-1]) % hop
    return F.pad(waveform, (0, extra)) if extra else waveform


def crop_to_hop_multiple(waveform: Tensor, hop_length: int) -> Tensor:
    """Keep the first ``floor(T / hop) * hop`` samples of ``[..., T]`` (the ``"floor"`` convention)."""
    hop = _positive_int("hop_length", hop_length)
    if not isinstance(waveform, Tensor) or waveform.ndim < 1:
        raise ValueError("waveform: expected a tensor [..., T]")
    return waveform[..., : (waveform.shape[-1] // hop) * hop]
