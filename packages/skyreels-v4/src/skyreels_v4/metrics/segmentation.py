"""Segment frames by colour: nearest palette colour per pixel, then connected components.

A pixel belongs to the reference colour (3 backgrounds, then the 8 object colours) nearest to it
in RGB, unless even the nearest is further than ``max_distance`` (8-bit units): then it is
unknown (``-1``). This tolerates drifting colours, noise and blended edges of imperfect drawings.
Connected components (8-connectivity) separate an object from stray pixels of its colour.
:func:`reference_connected_components` is the plain breadth-first reference for the tests.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from skyreels_v4.world.palette import BACKGROUND_RGB, COLOUR_RGB

#: Reference colours in class-id order: backgrounds 0..2, then object colour ``c`` at ``3 + c``.
REFERENCE_RGB: tuple[tuple[int, int, int], ...] = BACKGROUND_RGB + COLOUR_RGB
NUM_BACKGROUNDS = len(BACKGROUND_RGB)


def classify_pixels(frames: torch.Tensor, max_distance: float) -> torch.Tensor:
    """Nearest reference colour of every pixel.

    Args:
        frames: ``[F, 3, H, W]`` RGB in [-1, 1] (float32 or float64).
        max_distance: largest RGB distance (8-bit units) to still accept the nearest colour.

    Returns:
        ``[F, H, W]`` int64 class ids (see :data:`REFERENCE_RGB`), ``-1`` where unknown.
    """
    num_frames, _, height, width = frames.shape
    references = torch.tensor(REFERENCE_RGB, dtype=frames.dtype) / 127.5 - 1.0  # [R, 3]
    pixels = frames.permute(0, 2, 3, 1).reshape(-1, 3)
    # |x - r|² = |x|² - 2 x·r + |r|², one matrix product per chunk of pixels instead of a pass
    # per reference colour; chunks bound the [pixels, R] buffer.
    best_class = torch.empty(pixels.shape[0], dtype=torch.int64)
    best_distance = torch.empty(pixels.shape[0], dtype=frames.dtype)
    chunk = 1 << 20
    for start in range(0, pixels.shape[0], chunk):
        x = pixels[start : start + chunk]
        distance = (x.square().sum(dim=1, keepdim=True) - 2.0 * x @ references.T) + references.square().sum(
            dim=1
        )
        best_distance[start : start + chunk], best_class[start : start + chunk] = distance.min(dim=1)
    limit = (max_distance / 127.5) ** 2
    best_class = torch.where(best_distance <= limit, best_class, torch.full_like(best_class, -1))
    return best_class.view(num_frames, height, width)


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Label the 8-connected components of each image.

    Labels propagate as a running maximum of pixel indices (a 3x3 max-pool restricted to the
    mask), accelerated by pointer jumping (a pixel adopts the label its label points to). All
    pixels of a component converge to the largest index in it.

    Args:
        mask: ``[N, H, W]`` bool.

    Returns:
        ``[N, H, W]`` int64: 0 outside the mask, else ``1 +`` the flat index (``row * W + col``)
        of the component's last pixel, so labels are comparable with the reference.
    """
    if mask.dtype != torch.bool or mask.ndim != 3:
        raise ValueError(f"mask: expected a bool tensor [N, H, W], got {mask.dtype} {tuple(mask.shape)}")
    n, h, w = mask.shape
    if h * w >= 2**24:
        raise ValueError(f"mask: expected H * W < 2**24 (labels are exact float32 integers), got {h}x{w}")
    keep = mask.to(torch.float32)
    index = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w)
    labels = index * keep
    while True:
        pooled = F.max_pool2d(labels.unsqueeze(1), kernel_size=3, stride=1, padding=1).squeeze(1) * keep
        flat = pooled.view(n, h * w)
        jumped = flat.gather(1, (flat - 1).clamp(min=0).long()).view(n, h, w) * keep
        updated = torch.maximum(pooled, jumped)
        if torch.equal(updated, labels):
            return labels.long()
        labels = updated


def reference_connected_components(mask: np.ndarray) -> np.ndarray:
    """Plain BFS reference of :func:`connected_components` for one ``[H, W]`` bool mask."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int64)
    seen = np.zeros((h, w), dtype=bool)
    for row in range(h):
        for col in range(w):
            if not mask[row, col] or seen[row, col]:
                continue
            members = []
            queue = deque([(row, col)])
            seen[row, col] = True
            while queue:
                r, c = queue.popleft()
                members.append((r, c))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                            seen[rr, cc] = True
                            queue.append((rr, cc))
            label = 1 + max(r * w + c for r, c in members)
            for r, c in members:
                labels[r, c] = label
    return labels


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep only the largest 8-connected component of each ``[N, H, W]`` bool mask.

    Ties go to the component with the larger label (its last pixel comes later in raster order).
    """
    labels = connected_components(mask)
    n, h, w = mask.shape
    offsets = torch.arange(n).view(n, 1) * (h * w + 1)
    areas = torch.bincount((labels.view(n, -1) + offsets).view(-1), minlength=n * (h * w + 1))
    areas = areas.view(n, h * w + 1)
    areas[:, 0] = 0
    # argmax returns the first maximum; flip so that ties go to the larger label.
    best = h * w - areas.flip(1).argmax(dim=1)
    return (labels == best.view(n, 1, 1)) & mask
