"""Random editing masks for training (paper 3.2: "fixed foreground/background masks and dynamic
per-frame editing masks"; 3.4.1 builds inpainting/editing data with masks).

Shape legend: F pixel frames, H, W pixel height/width.

Every generator returns a bool KEEP mask ``[F, H, W]`` (True = condition/keep, False = edit/generate,
ARCHITECTURE.md section 3), draws all randomness from the given ``torch.Generator`` (same seed, same
mask), and edits a non-empty region. Kinds:

- ``BOX``: one axis-aligned box, the same in every frame.
- ``BRUSH``: a few thick random-walk strokes (free-form, like a user's brush), the same in every frame.
- ``MOVING_BOX``: a box of fixed size moving linearly from a random start to a random end position.
- ``TEMPORAL_SPAN``: a contiguous span of whole frames is generated, the rest kept (needs F >= 2).
- ``OUTPAINT``: random border widths on each side are generated, the centre kept.
"""

from __future__ import annotations

import enum
import itertools
import math

import torch
from torch import Tensor

from skyreels_inpaint_conditioning.errors import TaskParameterError

__all__ = [
    "EditMaskKind",
    "random_box_mask",
    "random_brush_mask",
    "random_edit_mask",
    "random_moving_box_mask",
    "random_outpainting_mask",
    "random_temporal_span_mask",
]


class EditMaskKind(str, enum.Enum):
    """Families of random editing masks (see the module docstring)."""

    BOX = "box"
    BRUSH = "brush"
    MOVING_BOX = "moving_box"
    TEMPORAL_SPAN = "temporal_span"
    OUTPAINT = "outpaint"


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform int in ``[low, high]`` (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator).item())


def _check_size(num_frames: int, height: int, width: int) -> None:
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TaskParameterError(f"{name}: expected a positive int, got {value!r}")
    if height < 2 or width < 2:
        raise TaskParameterError(
            f"height, width: expected at least 2x2 pixels to edit a part, got {height}x{width}"
        )


def _box_size(generator: torch.Generator, size: int, lo: float, hi: float) -> int:
    return _randint(generator, max(1, round(lo * size)), max(1, min(size - 1, round(hi * size))))


def random_box_mask(
    *,
    num_frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
    min_fraction: float = 0.1,
    max_fraction: float = 0.5,
) -> Tensor:
    """One static box to edit; sides ``min_fraction..max_fraction`` of the frame's (at most side - 1)."""
    _check_size(num_frames, height, width)
    bh = _box_size(generator, height, min_fraction, max_fraction)
    bw = _box_size(generator, width, min_fraction, max_fraction)
    y, x = _randint(generator, 0, height - bh), _randint(generator, 0, width - bw)
    keep = torch.ones(num_frames, height, width, dtype=torch.bool)
    keep[:, y : y + bh, x : x + bw] = False
    return keep


def random_brush_mask(
    *,
    num_frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
    max_strokes: int = 4,
    max_vertices: int = 8,
) -> Tensor:
    """Free-form strokes: random walks of thick round brushes, the same in every frame."""
    _check_size(num_frames, height, width)
    side = min(height, width)
    edit = torch.zeros(height, width, dtype=torch.bool)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    for _ in range(_randint(generator, 1, max_strokes)):
        radius = max(1.0, _uniform(generator, 0.03, 0.1) * side)
        y, x = _uniform(generator, 0, height - 1), _uniform(generator, 0, width - 1)
        points = [(y, x)]
        for _ in range(_randint(generator, 1, max_vertices - 1)):
            angle = _uniform(generator, 0.0, 2 * math.pi)
            length = _uniform(generator, 0.1, 0.3) * max(height, width)
            y = min(max(y + length * math.sin(angle), 0.0), height - 1.0)
            x = min(max(x + length * math.cos(angle), 0.0), width - 1.0)
            points.append((y, x))
        for (y0, x0), (y1, x1) in itertools.pairwise(points):
            # Stamp discs along the segment, spaced by half a radius, so the stroke has no gaps.
            steps = max(1, math.ceil(math.hypot(y1 - y0, x1 - x0) / (0.5 * radius)))
            for s in range(steps + 1):
                cy, cx = y0 + (y1 - y0) * s / steps, x0 + (x1 - x0) * s / steps
                edit |= (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
    return (~edit)[None].expand(num_frames, height, width).clone()


def random_moving_box_mask(
    *,
    num_frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
    min_fraction: float = 0.15,
    max_fraction: float = 0.4,
) -> Tensor:
    """A box of fixed size moving linearly from a random start corner to a random end corner."""
    _check_size(num_frames, height, width)
    bh = _box_size(generator, height, min_fraction, max_fraction)
    bw = _box_size(generator, width, min_fraction, max_fraction)
    y0, x0 = _randint(generator, 0, height - bh), _randint(generator, 0, width - bw)
    y1, x1 = _randint(generator, 0, height - bh), _randint(generator, 0, width - bw)
    keep = torch.ones(num_frames, height, width, dtype=torch.bool)
    for f in range(num_frames):
        a = f / max(num_frames - 1, 1)
        y, x = round(y0 + a * (y1 - y0)), round(x0 + a * (x1 - x0))
        keep[f, y : y + bh, x : x + bw] = False
    return keep


def random_temporal_span_mask(
    *, num_frames: int, height: int, width: int, generator: torch.Generator, temporal_factor: int = 4
) -> Tensor:
    """A contiguous span of whole frames to generate (needs F >= 2).

    What stays kept always covers a whole latent frame of a causal VAE with ``temporal_factor``
    (frame 0 alone, or an aligned group of ``temporal_factor`` frames): otherwise the latent mask M
    would be all zero and the "editing" sample would silently be text-to-video. A span that starts
    at frame 0 and leaves no whole group at the end is moved to start at a random later frame.
    """
    _check_size(num_frames, height, width)
    if num_frames < 2:
        raise TaskParameterError(
            f"num_frames: a temporal span edit needs at least 2 frames, got {num_frames}"
        )
    length = _randint(generator, 1, num_frames - 1)
    start = _randint(generator, 0, num_frames - length)
    end = start + length
    # Kept suffix [end, F) holds the whole group [4j-3, 4j] for some j >= 1 iff its first such
    # group starts at or after `end` and ends before F.
    first_group = max(1, -(-(end + temporal_factor - 1) // temporal_factor))
    if start == 0 and first_group * temporal_factor > num_frames - 1:
        start = _randint(generator, 1, num_frames - length)  # frame 0 (latent frame 0) stays kept
    keep = torch.ones(num_frames, height, width, dtype=torch.bool)
    keep[start : start + length] = False
    return keep


def random_outpainting_mask(
    *, num_frames: int, height: int, width: int, generator: torch.Generator, max_fraction: float = 0.35
) -> Tensor:
    """Generate random-width borders (each side ``0..max_fraction`` of the frame; not all zero)."""
    _check_size(num_frames, height, width)
    widths = [0, 0, 0, 0]
    while sum(widths) == 0:  # at least one border; redraws happen only when every draw was 0
        widths = [
            _randint(generator, 0, max(1, int(max_fraction * size)))
            for size in (height, height, width, width)
        ]
    top, bottom, left, right = widths
    keep = torch.zeros(num_frames, height, width, dtype=torch.bool)
    keep[:, top : max(top, height - bottom), left : max(left, width - right)] = True
    return keep


_GENERATORS = {
    EditMaskKind.BOX: random_box_mask,
    EditMaskKind.BRUSH: random_brush_mask,
    EditMaskKind.MOVING_BOX: random_moving_box_mask,
    EditMaskKind.TEMPORAL_SPAN: random_temporal_span_mask,
    EditMaskKind.OUTPAINT: random_outpainting_mask,
}


def random_edit_mask(
    *,
    num_frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
    kind: EditMaskKind | str | None = None,
) -> Tensor:
    """A random keep mask ``[F, H, W]`` of ``kind``; ``None`` picks a kind uniformly (temporal spans
    only when ``F >= 2``)."""
    if kind is None:
        kinds = [k for k in EditMaskKind if num_frames >= 2 or k is not EditMaskKind.TEMPORAL_SPAN]
        kind = kinds[_randint(generator, 0, len(kinds) - 1)]
    try:
        kind = EditMaskKind(kind)
    except ValueError:
        valid = ", ".join(k.value for k in EditMaskKind)
        raise TaskParameterError(f"kind: expected one of {valid}, got {kind!r}") from None
    return _GENERATORS[kind](num_frames=num_frames, height=height, width=width, generator=generator)
