"""Find and follow the coloured objects of a clip, and recognise their shapes, without labels.

Per clip: classify pixels by colour (:func:`classify_pixels`), call a colour *present* when its
pixels cover at least ``min_area_fraction`` of the frame in at least ``presence_fraction`` of the
frames, and follow the largest connected component of each present colour. Its per-frame area,
centroid and bounding box give the track and two shape features:

* fill ratio ``A / (w h)`` of the bounding box: circle π/4 ≈ 0.785, square 1, triangle 0.5;
* vertical asymmetry ``(ȳ - y_box_centre) / h``: 0 for circle and square, 1/6 for the upward
  triangle (its centroid sits two thirds down).

A frame's shape is the nearest prototype in ``(fill, 2·asymmetry)``; the clip's shape of that
colour is the majority over its *clean* frames: no other object touches its box and its area is
at least ``occlusion_ratio`` times the track's median (partly covered objects do not vote).
Positions are the centroid in clean frames; :func:`track_clip` explains the occluded ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from skyreels_v4.metrics.segmentation import NUM_BACKGROUNDS, classify_pixels, largest_component
from skyreels_v4.world.palette import Colour, Shape

#: (fill ratio, 2 x vertical asymmetry) of the ideal shapes, in Shape id order.
SHAPE_PROTOTYPES: tuple[tuple[float, float], ...] = ((math.pi / 4, 0.0), (1.0, 0.0), (0.5, 1.0 / 3.0))
_NUM_CLASSES = NUM_BACKGROUNDS + len(Colour)


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """How colours are segmented and tracks accepted (see the module docstring)."""

    max_colour_distance: float = 80.0
    min_area_fraction: float = 0.003
    presence_fraction: float = 0.5
    occlusion_ratio: float = 0.8
    min_visible_ratio: float = 0.35

    def __post_init__(self) -> None:
        checks = (
            ("max_colour_distance", self.max_colour_distance > 0, "> 0"),
            ("min_area_fraction", 0 < self.min_area_fraction < 1, "in (0, 1)"),
            ("presence_fraction", 0 < self.presence_fraction <= 1, "in (0, 1]"),
            ("occlusion_ratio", 0 < self.occlusion_ratio <= 1, "in (0, 1]"),
            (
                "min_visible_ratio",
                0 <= self.min_visible_ratio <= self.occlusion_ratio,
                "in [0, occlusion_ratio]",
            ),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"TrackingConfig.{name}: expected {expected}, got {getattr(self, name)!r}")


@dataclass(frozen=True, kw_only=True)
class ClipTracks:
    """Tracks of one clip (``K = 8`` colours in :class:`Colour` id order, ``F`` frames).

    Attributes:
        background: id of the most frequent background colour.
        present: ``[K]`` bool, colour present in the clip.
        area: ``[K, F]`` pixels of the largest component (0 when absent).
        centre: ``[K, F, 2]`` bounding-box centre ``(x, y)`` in canvas units, NaN where that
            coordinate could not be measured (see :func:`track_clip`).
        clean: ``[K, F]`` bool, frames where the whole object is visible (used for shapes).
        frame_shapes: ``[K, F]`` int64 per-frame shape ids (-1 when not clean).
        shapes: ``[K]`` int64 clip-level shape per colour (-1 when absent).
    """

    background: int
    present: np.ndarray
    area: np.ndarray
    centre: np.ndarray
    clean: np.ndarray
    frame_shapes: np.ndarray
    shapes: np.ndarray


def classify_shape(fill: np.ndarray, asymmetry: np.ndarray) -> np.ndarray:
    """Nearest :data:`SHAPE_PROTOTYPES` of per-frame features -> Shape ids (same shape as input)."""
    features = np.stack([fill, 2.0 * asymmetry], axis=-1)[..., None, :]
    prototypes = np.asarray(SHAPE_PROTOTYPES)
    return np.argmin(((features - prototypes) ** 2).sum(-1), axis=-1)


def track_clip(frames: torch.Tensor, config: TrackingConfig) -> ClipTracks:
    """Track the objects of one clip ``frames [3, F, H, W]`` in [-1, 1].

    Objects pass over each other, so a track's visible part can be cut by another object. An
    edge of the bounding box is *hidden* when pixels of another present colour lie within two
    pixels beyond it (the blended seam between two objects may be unclassified); the centre is
    then placed from the other edge and the object's full extent (median over clean frames),
    and is unknown (NaN) when both edges of an axis are hidden.
    """
    _, num_frames, height, width = frames.shape
    classes = classify_pixels(frames.permute(1, 0, 2, 3), config.max_colour_distance)  # [F, H, W]
    # Pixels per class and frame ([classes, F]); unknown pixels (-1) land in the dropped row.
    offsets = torch.arange(num_frames).view(-1, 1, 1) * (_NUM_CLASSES + 1)
    counts = torch.bincount((classes + 1 + offsets).view(-1), minlength=num_frames * (_NUM_CLASSES + 1))
    counts = counts.view(num_frames, _NUM_CLASSES + 1)[:, 1:].T
    background = int(counts[:NUM_BACKGROUNDS].sum(dim=1).argmax())
    min_area = config.min_area_fraction * height * width
    present = (
        (counts[NUM_BACKGROUNDS:] >= min_area).double().mean(dim=1) >= config.presence_fraction
    ).numpy()

    num_colours = len(Colour)
    area = np.zeros((num_colours, num_frames))
    centre = np.full((num_colours, num_frames, 2), np.nan)
    clean = np.zeros((num_colours, num_frames), dtype=bool)
    frame_shapes = np.full((num_colours, num_frames), -1, dtype=np.int64)
    shapes = np.full(num_colours, -1, dtype=np.int64)
    ids = np.flatnonzero(present)
    if ids.size:
        masks = torch.stack([classes == NUM_BACKGROUNDS + int(c) for c in ids])  # [P, F, H, W]
        blobs = largest_component(masks.view(-1, height, width)).view(masks.shape)
        others = masks.any(dim=0, keepdim=True) & ~masks
        stats = _blob_stats(blobs, others)
        for p, colour in enumerate(ids):
            track = {key: value[p] for key, value in stats.items()}
            area[colour] = track["area"]
            visible = track["area"] >= min_area
            if not visible.any():
                continue
            typical = np.median(track["area"][visible])
            whole = ~(track["hidden_x"].any(axis=1) | track["hidden_y"].any(axis=1))
            clean[colour] = visible & whole & (track["area"] >= config.occlusion_ratio * typical)
            measurable = visible & (track["area"] >= config.min_visible_ratio * typical)
            for axis, name in enumerate("xy"):
                low, high, hidden = track[f"{name}0"], track[f"{name}1"], track[f"hidden_{name}"]
                centroid = track[f"c{name}"]
                reference = clean[colour] if clean[colour].any() else measurable
                extent = np.median((high - low)[reference])
                # Centroid minus box centre is constant for a rigid shape (1/6 of the height
                # for the triangle in y): it moves box-based estimates onto the centroid.
                offset = np.median((centroid - 0.5 * (low + high))[reference])
                from_box = _centre(low, high, hidden, extent, measurable) + offset
                centre[colour, :, axis] = np.where(clean[colour], centroid, from_box)
            centre[colour, :, 0] /= width
            centre[colour, :, 1] /= height
            per_frame = classify_shape(track["fill"], track["asymmetry"])
            frame_shapes[colour] = np.where(clean[colour], per_frame, -1)
            # An object that is never whole (always touching another) still gets a shape.
            voters = clean[colour] if clean[colour].any() else measurable
            shapes[colour] = int(np.bincount(per_frame[voters], minlength=len(Shape)).argmax())
    return ClipTracks(
        background=background,
        present=present,
        area=area,
        centre=centre,
        clean=clean,
        frame_shapes=frame_shapes,
        shapes=shapes,
    )


def _centre(
    low: np.ndarray, high: np.ndarray, hidden: np.ndarray, extent: float, visible: np.ndarray
) -> np.ndarray:
    """Box centre along one axis (pixels) from its visible edges ``low``/``high`` (pixel boundaries)."""
    both = 0.5 * (low + high)
    from_high = high - 0.5 * extent
    from_low = low + 0.5 * extent
    out = np.where(hidden[:, 0], from_high, np.where(hidden[:, 1], from_low, both))
    return np.where(visible & ~(hidden[:, 0] & hidden[:, 1]), out, np.nan)


def _blob_stats(blobs: torch.Tensor, others: torch.Tensor) -> dict[str, np.ndarray]:
    """Per (track, frame) area, box edges (pixel boundaries), hidden edges and shape features."""
    _, _, height, width = blobs.shape
    dtype = torch.float64
    weights = blobs.to(dtype)
    area = weights.sum(dim=(2, 3))
    rows = torch.arange(height, dtype=dtype) + 0.5
    cols = torch.arange(width, dtype=dtype) + 0.5
    cx = (weights.sum(dim=2) * cols).sum(dim=2) / area.clamp(min=1)
    cy = (weights.sum(dim=3) * rows).sum(dim=2) / area.clamp(min=1)
    x0, x1 = _first_last(blobs.any(dim=2))  # [P, F], inclusive pixel indices
    y0, y1 = _first_last(blobs.any(dim=3))
    box_w = (x1 - x0 + 1).clamp(min=1).to(dtype)
    box_h = (y1 - y0 + 1).clamp(min=1).to(dtype)
    box_cy = (y0 + y1 + 1).to(dtype) / 2
    hidden_x = torch.stack(
        [
            _edge_hidden(others, x0, dim=3, step=-1, span=(y0, y1)),
            _edge_hidden(others, x1, dim=3, step=1, span=(y0, y1)),
        ],
        dim=-1,
    )
    hidden_y = torch.stack(
        [
            _edge_hidden(others, y0, dim=2, step=-1, span=(x0, x1)),
            _edge_hidden(others, y1, dim=2, step=1, span=(x0, x1)),
        ],
        dim=-1,
    )
    return {
        "area": area.numpy(),
        "cx": cx.numpy(),
        "cy": cy.numpy(),
        "x0": x0.to(dtype).numpy(),
        "x1": (x1 + 1).to(dtype).numpy(),
        "y0": y0.to(dtype).numpy(),
        "y1": (y1 + 1).to(dtype).numpy(),
        "hidden_x": hidden_x.numpy(),
        "hidden_y": hidden_y.numpy(),
        "fill": (area / (box_w * box_h)).numpy(),
        "asymmetry": ((cy - box_cy) / box_h).numpy(),
    }


def _edge_hidden(
    others: torch.Tensor, edge: torch.Tensor, dim: int, step: int, span: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """True where another object's pixel lies one or two pixels beyond a box edge.

    Args:
        others: ``[P, F, H, W]`` bool, pixels of the other present colours.
        edge: ``[P, F]`` the box's outermost pixel index along ``dim`` (2: rows, 3: columns).
        step: -1 to look towards index 0, +1 away from it.
        span: ``[P, F]`` first and last index of the box along the other spatial axis; only
            that band beyond the edge is searched.
    """
    size = others.shape[dim]
    near = torch.zeros_like(others)
    for shift in (1, 2):
        # near[..., i] |= others[..., i + step * shift] along dim
        src = others.narrow(dim, max(step * shift, 0), size - shift)
        near.narrow(dim, max(-step * shift, 0), size - shift).logical_or_(src)
    index_shape = list(others.shape)
    index_shape[dim] = 1
    index = edge.clamp(0, size - 1).view(*edge.shape, 1, 1).expand(index_shape)
    line = near.gather(dim, index).flatten(2)  # [P, F, length of the other axis]
    position = torch.arange(line.shape[-1])
    inside = (position >= span[0].unsqueeze(-1)) & (position <= span[1].unsqueeze(-1))
    return (line & inside).any(dim=-1)


def _first_last(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last True index along the last axis (``length`` and -1 when none; callers mask those)."""
    length = occupied.shape[-1]
    index = torch.arange(length)
    first = torch.where(occupied, index, length).amin(dim=-1)
    last = torch.where(occupied, index, -1).amax(dim=-1)
    return first, last
