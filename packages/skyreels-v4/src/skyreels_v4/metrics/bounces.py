"""Bounce events seen in a video: direction reversals of the tracked objects.

For each tracked object and each axis: positions in occluded or missing frames are interpolated
from the clean ones; a centred moving average of ``smooth_frames`` frames removes jitter; the
frame-to-frame velocity gets a sign (``0`` when slower than ``min_speed``); runs of one sign
shorter than ``min_run`` velocities are dropped (flicker), and a reversal is the boundary between
two remaining runs of opposite sign. Its time is where the straight lines fitted to the last
``fit_frames`` positions before and the first ``fit_frames`` after meet (objects move at constant
velocity between hits), which gives sub-frame precision; it is kept inside the frames that
bracket the reversal. The clip's events are the x and y reversals of all objects, sorted.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from skyreels_v4.metrics.tracking import ClipTracks


@dataclass(frozen=True, kw_only=True)
class BounceConfig:
    """Bounce detector settings (``min_speed`` in canvas sides per second)."""

    smooth_frames: int = 3
    min_run: int = 2
    min_speed: float = 0.05
    fit_frames: int = 3

    def __post_init__(self) -> None:
        checks = (
            ("smooth_frames", isinstance(self.smooth_frames, int) and self.smooth_frames % 2 == 1, "odd int"),
            ("min_run", isinstance(self.min_run, int) and self.min_run >= 1, "int >= 1"),
            ("min_speed", self.min_speed >= 0, ">= 0"),
            ("fit_frames", isinstance(self.fit_frames, int) and self.fit_frames >= 2, "int >= 2"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"BounceConfig.{name}: expected {expected}, got {getattr(self, name)!r}")


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window == 1:
        return values
    pad = window // 2
    padded = np.concatenate([np.full(pad, values[0]), values, np.full(pad, values[-1])])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def _runs(signs: np.ndarray) -> list[tuple[int, int, int]]:
    """``(sign, first, last)`` velocity-index runs of equal non-zero sign (zeros skipped)."""
    runs: list[tuple[int, int, int]] = []
    for k in np.flatnonzero(signs):
        s = int(signs[k])
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1], int(k))
        else:
            runs.append((s, int(k), int(k)))
    return runs


def _drop_flicker(runs: list[tuple[int, int, int]], min_run: int) -> list[tuple[int, int, int]]:
    merged: list[tuple[int, int, int]] = []
    for sign, first, last in runs:
        # Length counts the velocities of this sign, not the skipped slow ones.
        if last - first + 1 < min_run:
            continue
        if merged and merged[-1][0] == sign:
            merged[-1] = (sign, merged[-1][1], last)
        else:
            merged.append((sign, first, last))
    return merged


def _line(frames: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(frames.astype(np.float64), positions, deg=1)
    return float(slope), float(intercept)


def axis_reversals(
    positions: np.ndarray, fps: float, config: BounceConfig, clean: np.ndarray | None = None
) -> np.ndarray:
    """Reversal times (seconds) of one coordinate.

    Args:
        positions: ``[F]`` canvas units, no NaN (occluded frames already interpolated).
        fps: frame rate.
        config: detector settings.
        clean: ``[F]`` bool, frames whose position was measured (all when None); only these
            are used to fit the lines, so a reversal hidden by an occlusion is still timed from
            the motion seen before and after it.
    """
    clean = np.ones(positions.shape, dtype=bool) if clean is None else clean
    smooth = _smooth(positions, config.smooth_frames)
    velocity = np.diff(smooth) * fps
    signs = np.where(np.abs(velocity) >= config.min_speed, np.sign(velocity), 0).astype(np.int64)
    runs = _drop_flicker(_runs(signs), config.min_run)
    times = []
    for (_, a_first, a_last), (_, b_first, b_last) in pairwise(runs):
        # Velocity k spans frames k..k+1: frames <= a_last precede the reversal, >= b_first + 1 follow it.
        before = np.flatnonzero(clean[a_first : a_last + 1])[-config.fit_frames :] + a_first
        after = np.flatnonzero(clean[b_first + 1 : b_last + 2])[: config.fit_frames] + b_first + 1
        low = float(before[-1]) if before.size else float(a_last)
        high = float(after[0]) if after.size else float(b_first + 1)
        frame = 0.5 * (low + high)
        if before.size >= 2 and after.size >= 2:
            slope_a, icpt_a = _line(before, positions[before])
            slope_b, icpt_b = _line(after, positions[after])
            if abs(slope_a - slope_b) > 1e-12:
                frame = (icpt_b - icpt_a) / (slope_a - slope_b)
        times.append(min(max(frame, low), high) / fps)
    return np.asarray(times, dtype=np.float64)


def detect_bounces(tracks: ClipTracks, fps: float, config: BounceConfig) -> np.ndarray:
    """Bounce times (seconds, sorted) of one clip's tracks; a corner hit gives two events."""
    frames = np.arange(tracks.centre.shape[1])
    times = []
    for colour in np.flatnonzero(tracks.present):
        for axis in range(2):
            coordinate = tracks.centre[colour, :, axis]
            measured = ~np.isnan(coordinate)
            if measured.sum() < 2:
                continue
            filled = np.interp(frames, frames[measured], coordinate[measured])
            times.append(axis_reversals(filled, fps, config, measured))
    if not times:
        return np.zeros(0)
    return np.sort(np.concatenate(times))
