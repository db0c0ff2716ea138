"""Configuration of the procedural audio-visual world (resolution, timing, objects, sound).

Sizes are fractions of the canvas side and speeds are canvas sides per second, so one seed gives
the same scene (same motion, same wall-hit times, same sound) at every resolution and frame rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Everything that shapes a clip; frozen so that datasets built from it stay comparable.

    Attributes:
        size: side of the square canvas in pixels.
        fps: video frame rate; frame ``k`` shows the scene at time ``k / fps``.
        num_frames: frames per clip. 81 at 16 fps is the paper's 5.06 s clip (21 causal latents).
        sample_rate: audio samples per second.
        audio_channels: 1 (mono) or 2 (stereo: each blip is panned by the object's x position).
        min_objects, max_objects: inclusive range of the object count (at most 8: colours are
            distinct within a clip).
        object_size_range: side of an object's bounding box, fraction of the canvas side.
        speed_range: speed in canvas sides per second.
        min_axis_angle_deg: the velocity direction keeps at least this angle from both axes, so
            that both coordinates move visibly and every object reaches a wall in a short clip.
        bgm_probability: probability that a clip carries the low background drone.
        tone_duration_s: length of a wall-hit blip.
        tone_attack_s: linear fade-in of a blip (avoids a click).
        tone_decay_s: time constant of the blip's exponential decay.
        tone_amplitude: peak amplitude of one blip.
        drone_amplitude: peak amplitude of each of the drone's two partials.
        drone_hz: fundamental of the drone (the second partial is a fifth above).
        antialias: draw edges with one pixel of analytic coverage instead of hard edges.
    """

    size: int = 64
    fps: float = 16.0
    num_frames: int = 81
    sample_rate: int = 44100
    audio_channels: Literal[1, 2] = 1
    min_objects: int = 1
    max_objects: int = 3
    object_size_range: tuple[float, float] = (0.15, 0.3)
    speed_range: tuple[float, float] = (0.3, 0.7)
    min_axis_angle_deg: float = 20.0
    bgm_probability: float = 0.5
    tone_duration_s: float = 0.05
    tone_attack_s: float = 0.001
    tone_decay_s: float = 0.01
    tone_amplitude: float = 0.3
    drone_amplitude: float = 0.04
    drone_hz: float = 110.0
    antialias: bool = True

    def __post_init__(self) -> None:
        _require(isinstance(self.size, int) and self.size >= 8, "size", "an int >= 8", self.size)
        _require(self.fps > 0, "fps", "> 0", self.fps)
        _require(
            isinstance(self.num_frames, int) and self.num_frames >= 2,
            "num_frames",
            "an int >= 2",
            self.num_frames,
        )
        _require(
            isinstance(self.sample_rate, int) and self.sample_rate >= 4000,
            "sample_rate",
            "an int >= 4000 (the 880 Hz blip needs it)",
            self.sample_rate,
        )
        _require(self.audio_channels in (1, 2), "audio_channels", "1 or 2", self.audio_channels)
        _require(
            1 <= self.min_objects <= self.max_objects <= 8,
            "min_objects/max_objects",
            "1 <= min_objects <= max_objects <= 8",
            (self.min_objects, self.max_objects),
        )
        lo, hi = self.object_size_range
        _require(0 < lo <= hi < 0.5, "object_size_range", "0 < low <= high < 0.5", self.object_size_range)
        lo, hi = self.speed_range
        _require(0 < lo <= hi, "speed_range", "0 < low <= high", self.speed_range)
        _require(
            0 <= self.min_axis_angle_deg < 45, "min_axis_angle_deg", "in [0, 45)", self.min_axis_angle_deg
        )
        _require(0 <= self.bgm_probability <= 1, "bgm_probability", "in [0, 1]", self.bgm_probability)
        _require(
            0 < self.tone_attack_s < self.tone_duration_s,
            "tone_attack_s",
            "0 < tone_attack_s < tone_duration_s",
            (self.tone_attack_s, self.tone_duration_s),
        )
        _require(self.tone_decay_s > 0, "tone_decay_s", "> 0", self.tone_decay_s)
        # Three simultaneous blips plus the drone must stay inside [-1, 1] without clipping.
        peak = self.max_objects * self.tone_amplitude + 2 * self.drone_amplitude
        _require(
            self.tone_amplitude > 0 and self.drone_amplitude >= 0 and peak <= 1.0,
            "tone_amplitude/drone_amplitude",
            "max_objects * tone_amplitude + 2 * drone_amplitude <= 1",
            peak,
        )
        _require(
            0 < self.drone_hz * 1.5 < self.sample_rate / 2, "drone_hz", "below Nyquist / 1.5", self.drone_hz
        )

    @property
    def duration_s(self) -> float:
        """Clip duration in seconds (``num_frames / fps``)."""
        return self.num_frames / self.fps

    @property
    def num_samples(self) -> int:
        """Audio samples per channel: the clip duration rounded to whole samples."""
        return round(self.duration_s * self.sample_rate)

    @property
    def max_wall_hits(self) -> int:
        """Upper bound on the wall hits of one clip (the padded length of the hit tensors)."""
        travel = self.speed_range[1] * self.duration_s
        span = 1.0 - self.object_size_range[1]
        per_axis = math.floor(travel / span) + 1
        return 2 * per_axis * self.max_objects


def _require(ok: bool, name: str, expected: str, got: object) -> None:
    if not ok:
        raise ValueError(f"WorldConfig.{name}: expected {expected}, got {got!r}")
