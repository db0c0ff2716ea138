"""Rasterise a scene's frames: filled shapes over a plain background, vectorised over frames.

Each shape is a signed distance ``d`` (pixels, negative inside) evaluated at the pixel centres;
with anti-aliasing the pixel's coverage is ``clip(0.5 - d, 0, 1)`` (a one-pixel ramp across the
edge), without it ``d <= 0``. Objects are composited in scene order, later ones on top.
The slow per-pixel :func:`reference_render_frame` is the plain reference the tests compare with.
"""

from __future__ import annotations

import math

import numpy as np

from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.palette import Shape
from skyreels_v4.world.scene import Scene

_SQRT5 = math.sqrt(5.0)


def shape_signed_distance(shape: Shape, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of offsets ``(dx, dy)`` from a shape's centre.

    ``half`` is half the bounding-box side. The triangle points up: apex at the top centre, base
    along the bottom of the box (y grows downwards). Square and triangle use the maximum of the
    edge half-plane distances: exact inside, and a close bound within a pixel outside, which is
    all the one-pixel anti-aliasing ramp needs.
    """
    if shape is Shape.CIRCLE:
        return np.sqrt(dx * dx + dy * dy) - half
    if shape is Shape.SQUARE:
        return np.maximum(np.abs(dx), np.abs(dy)) - half
    if shape is Shape.TRIANGLE:
        base = dy - half
        right = (2.0 * dx - (dy + half)) / _SQRT5
        left = (-2.0 * dx - (dy + half)) / _SQRT5
        return np.maximum(base, np.maximum(right, left))
    raise ValueError(f"shape: expected a Shape, got {shape!r}")


def render_frames(scene: Scene, positions: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Draw every frame.

    Args:
        scene: background and objects (drawing order).
        positions: ``[F, N, 2]`` bounding-box centres in canvas units (:func:`simulate`).
        config: canvas size and anti-aliasing.

    Returns:
        ``[F, H, W, 3]`` uint8 RGB frames (``H = W = config.size``).
    """
    num_frames, num_objects, _ = positions.shape
    if num_objects != len(scene.objects):
        raise ValueError(
            f"positions: expected {len(scene.objects)} objects on axis 1, got shape {positions.shape}"
        )
    size = config.size
    centres = (np.arange(size, dtype=np.float32) + 0.5)[None, :]
    canvas = np.empty((num_frames, size, size, 3), dtype=np.float32)
    canvas[...] = np.asarray(scene.background.rgb, dtype=np.float32)
    for n, obj in enumerate(scene.objects):
        half = obj.size * size / 2
        cx = (positions[:, n, 0] * size).astype(np.float32)
        cy = (positions[:, n, 1] * size).astype(np.float32)
        # Only the rows/columns the object can touch in this clip are evaluated.
        x0 = max(math.floor(cx.min() - half - 1), 0)
        x1 = min(math.ceil(cx.max() + half + 1), size)
        y0 = max(math.floor(cy.min() - half - 1), 0)
        y1 = min(math.ceil(cy.max() + half + 1), size)
        dx = centres[:, x0:x1][:, None, :] - cx[:, None, None]  # [F, 1, w]
        dy = centres[:, y0:y1][:, :, None] - cy[:, None, None]  # [F, h, 1]
        dist = shape_signed_distance(obj.shape, dx, dy, half)
        if config.antialias:
            alpha = np.clip(0.5 - dist, 0.0, 1.0)
        else:
            alpha = (dist <= 0).astype(np.float32)
        region = canvas[:, y0:y1, x0:x1]
        colour = np.asarray(obj.colour.rgb, dtype=np.float32)
        region += alpha[..., None] * (colour - region)
    return np.rint(canvas).astype(np.uint8)


def reference_render_frame(scene: Scene, positions: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Plain per-pixel reference of one frame: ``positions [N, 2]`` -> ``[H, W, 3]`` uint8."""
    size = config.size
    out = np.zeros((size, size, 3), dtype=np.uint8)
    for row in range(size):
        for col in range(size):
            pixel = [float(c) for c in scene.background.rgb]
            for n, obj in enumerate(scene.objects):
                half = obj.size * size / 2
                dx = col + 0.5 - positions[n, 0] * size
                dy = row + 0.5 - positions[n, 1] * size
                if obj.shape is Shape.CIRCLE:
                    dist = math.hypot(dx, dy) - half
                elif obj.shape is Shape.SQUARE:
                    dist = max(abs(dx), abs(dy)) - half
                else:
                    dist = max(dy - half, (2 * dx - dy - half) / _SQRT5, (-2 * dx - dy - half) / _SQRT5)
                alpha = min(max(0.5 - dist, 0.0), 1.0) if config.antialias else float(dist <= 0)
                pixel = [p + alpha * (c - p) for p, c in zip(pixel, obj.colour.rgb)]
            out[row, col] = [round(p) for p in pixel]
    return out
