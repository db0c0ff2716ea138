"""Closed-form motion of the objects: constant velocity, elastic bounces off the four walls.

Along one axis an object of size ``s`` keeps its centre in ``[s/2, 1 - s/2]``; with ``L = 1 - s``
and the unfolded coordinate ``u(t) = p(0) - s/2 + v t`` the position is the triangle wave
``p(t) = s/2 + L - |(u mod 2L) - L|``, and the wall hits are the exact times where ``u`` crosses a
multiple of ``L`` (even multiples: the left/top wall, odd: right/bottom). No time stepping, so hit
times have full sub-frame precision and do not depend on the frame rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.scene import Scene


class Wall(IntEnum):
    """Which wall was hit (the value is the id stored in the ground truth)."""

    LEFT = 0
    RIGHT = 1
    TOP = 2
    BOTTOM = 3


@dataclass(frozen=True, kw_only=True)
class WorldTruth:
    """Ground truth of one clip (``N`` objects in scene order, ``K`` wall hits sorted by time).

    Attributes:
        positions: ``[F, N, 2]`` float64 bounding-box centres ``(x, y)`` in canvas units at each
            frame time ``k / fps``.
        hit_times: ``[K]`` float64 seconds in ``(0, duration)``.
        hit_objects: ``[K]`` int64 index of the object that hit.
        hit_walls: ``[K]`` int64 :class:`Wall` ids.
        hit_sounded: ``[K]`` bool; False for the second wall of a corner hit (the same object
            hitting again within one blip's duration sounds only once).
    """

    positions: np.ndarray
    hit_times: np.ndarray
    hit_objects: np.ndarray
    hit_walls: np.ndarray
    hit_sounded: np.ndarray


def positions_at(scene: Scene, times: np.ndarray) -> np.ndarray:
    """Bounding-box centres ``[T, N, 2]`` (canvas units) of every object at ``times`` ``[T]`` s."""
    times = np.asarray(times, dtype=np.float64)
    out = np.empty((times.shape[0], len(scene.objects), 2), dtype=np.float64)
    for n, obj in enumerate(scene.objects):
        span = 1.0 - obj.size
        for axis in range(2):
            unfolded = obj.start[axis] - obj.size / 2 + obj.velocity[axis] * times
            out[:, n, axis] = obj.size / 2 + span - np.abs(np.mod(unfolded, 2 * span) - span)
    return out


def wall_hits(scene: Scene, duration_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact wall-hit ``(times, objects, walls)`` in ``(0, duration_s)``, sorted by time."""
    times, objects, walls = [], [], []
    for n, obj in enumerate(scene.objects):
        span = 1.0 - obj.size
        for axis in range(2):
            u0 = obj.start[axis] - obj.size / 2
            v = obj.velocity[axis]
            if v == 0:
                continue
            # Multiples k of the span that u(t) = u0 + v t reaches in (0, duration].
            if v > 0:
                first, last = math.floor(u0 / span) + 1, math.floor((u0 + v * duration_s) / span)
            else:
                first, last = math.ceil((u0 + v * duration_s) / span), math.ceil(u0 / span) - 1
            for k in range(first, last + 1):
                t = (k * span - u0) / v
                if 0.0 < t < duration_s:
                    times.append(t)
                    objects.append(n)
                    low, high = (Wall.LEFT, Wall.RIGHT) if axis == 0 else (Wall.TOP, Wall.BOTTOM)
                    walls.append(int(low if k % 2 == 0 else high))
    times_a = np.asarray(times, dtype=np.float64)
    objects_a = np.asarray(objects, dtype=np.int64)
    walls_a = np.asarray(walls, dtype=np.int64)
    order = np.lexsort((walls_a, objects_a, times_a))
    return times_a[order], objects_a[order], walls_a[order]


def simulate(scene: Scene, config: WorldConfig) -> WorldTruth:
    """Positions at every frame and every wall hit of ``scene`` over one clip of ``config``."""
    frame_times = np.arange(config.num_frames, dtype=np.float64) / config.fps
    times, objects, walls = wall_hits(scene, config.duration_s)
    sounded = np.ones(times.shape, dtype=bool)
    last_sound = dict.fromkeys(range(len(scene.objects)), -math.inf)
    for k, (t, n) in enumerate(zip(times, objects)):
        if t - last_sound[int(n)] < config.tone_duration_s:
            sounded[k] = False
        else:
            last_sound[int(n)] = t
    return WorldTruth(
        positions=positions_at(scene, frame_times),
        hit_times=times,
        hit_objects=objects,
        hit_walls=walls,
        hit_sounded=sounded,
    )
