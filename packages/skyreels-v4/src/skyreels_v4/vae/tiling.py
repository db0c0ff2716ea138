"""Bounded-memory video decoding and encoding: spatial tiles with blended overlaps, temporal chunks
with causal context, batch slices (the VAE side of paper sections 3-4: 81-frame clips at 480p and the
refiner's 1080p outputs must decode on one accelerator).

Shape legend: B batch, C channels, T latent frames, F pixel frames, h, w latent size, H, W pixels.

Spatial tiles are laid out in latent cells. Along an axis of ``n`` cells, ``k = ceil((n - overlap) /
(tile - overlap))`` tiles of ``tile`` cells are spread evenly from 0 to ``n - tile`` (starts rounded to
``align`` cells), so neighbours overlap by at least ``overlap - align`` cells. Every tile is processed
alone; outputs are blended with separable ``sin^2`` ramps over each overlap and divided by the summed
weights, so the blend is an exact weighted average. One tile that covers the frame gives the untiled
result bit for bit.

Temporal chunks (decode only): chunk ``[s, e)`` of latent frames is decoded together with the
``context`` latent frames before it, and the pixel frames of the context are dropped. A causal
decoder turns its first input latent into one frame and every other latent into ``temporal_factor``
frames, so chunk 0 gives ``1 + tf * (e - 1)`` frames and every later chunk ``tf * (e - s)``: the frame
count of the whole clip is kept. When ``context`` covers the decoder's temporal receptive field the
result equals whole-clip decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "VideoTilingConfig",
    "blend_weights",
    "temporal_chunked_decode",
    "tile_windows",
    "tiled_spatial_apply",
]


@dataclass(frozen=True, kw_only=True)
class VideoTilingConfig:
    """How a codec bounds memory; the default processes everything at once.

    Attributes:
        tile_latents: spatial tile side in latent cells (``None``: the whole frame in one tile).
            Decoding a tile holds the decoder activations of ``tile * spatial_factor`` pixels square.
        overlap_latents: cells shared by neighbouring tiles, blended (at least 1 when tiling).
        align_latents: tile starts and sides are multiples of this (for VAEs with size constraints).
        temporal_chunk_latents: latent frames decoded per chunk (``None``: the whole clip).
        temporal_context_latents: preceding latent frames decoded with each chunk and then dropped (at
            least 1: a chunk's first latent decodes to a single frame, which is always dropped).
        batch_slice: samples encoded/decoded per call (``None``: the whole batch).
    """

    tile_latents: int | None = None
    overlap_latents: int = 2
    align_latents: int = 1
    temporal_chunk_latents: int | None = None
    temporal_context_latents: int = 2
    batch_slice: int | None = None

    def __post_init__(self) -> None:
        for name in ("tile_latents", "temporal_chunk_latents", "batch_slice"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"VideoTilingConfig.{name}: expected None or an int >= 1, got {value!r}")
        for name, low in (("overlap_latents", 0), ("align_latents", 1), ("temporal_context_latents", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"VideoTilingConfig.{name}: expected an int >= {low}, got {value!r}")
        if self.tile_latents is not None:
            if 2 * self.overlap_latents > self.tile_latents:
                raise ValueError(
                    f"VideoTilingConfig.overlap_latents: expected at most tile_latents // 2 = "
                    f"{self.tile_latents // 2}, got {self.overlap_latents}"
                )
            if self.tile_latents % self.align_latents:
                raise ValueError(
                    f"VideoTilingConfig.tile_latents: expected a multiple of align_latents="
                    f"{self.align_latents}, got {self.tile_latents}"
                )

    def to_dict(self) -> dict[str, int | None]:
        """Plain JSON-able fields."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def tile_windows(n: int, *, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` tiles of ``tile`` cells covering ``[0, n)`` (module docstring)."""
    if tile >= n:
        return [(0, n)]
    count = math.ceil((n - overlap) / (tile - overlap)) if tile > overlap else n
    count = max(count, 2)
    span = n - tile
    starts = sorted({min(span, align * round(i * span / (count - 1) / align)) for i in range(count)})
    if starts[-1] != span:  # span is a multiple of align when n and tile are; keep the end covered
        starts.append(span)
    return [(s, s + tile) for s in starts]


def blend_weights(windows: list[tuple[int, int]], scale: int, *, dtype: torch.dtype) -> list[Tensor]:
    """Per-window 1D weights in output units (``scale`` outputs per cell): ``sin^2`` rise over the overlap
    with the previous window, ``cos^2`` fall over the overlap with the next one, 1 elsewhere, all > 0."""
    weights = []
    for k, (start, end) in enumerate(windows):
        w = torch.ones((end - start) * scale, dtype=torch.float64)
        if k > 0:
            rise = (windows[k - 1][1] - start) * scale
            if rise > 0:
                phase = (torch.arange(rise, dtype=torch.float64) + 0.5) / rise * (math.pi / 2)
                w[:rise] *= torch.sin(phase) ** 2
        if k < len(windows) - 1:
            fall = (end - windows[k + 1][0]) * scale
            if fall > 0:
                phase = (torch.arange(fall, dtype=torch.float64) + 0.5) / fall * (math.pi / 2)
                w[len(w) - fall :] *= torch.cos(phase) ** 2
        weights.append(w.to(dtype))
    return weights


def tiled_spatial_apply(
    fn: Callable[[Tensor], Tensor],
    inputs: Tensor,
    *,
    cells: tuple[int, int],
    in_per_cell: int,
    out_per_cell: int,
    config: VideoTilingConfig,
) -> Tensor:
    """Apply ``fn`` (``[B, Ci, t, hi, wi] -> [B, Co, t', ho, wo]``, ``hi = h * in_per_cell``) per tile.

    ``cells`` is the latent grid ``(h, w)``; tiles follow :func:`tile_windows` and are blended with
    :func:`blend_weights` in output space.
    """
    h, w = cells
    if config.tile_latents is None or (config.tile_latents >= h and config.tile_latents >= w):
        return fn(inputs)
    kw = {"tile": config.tile_latents, "overlap": config.overlap_latents, "align": config.align_latents}
    rows, cols = tile_windows(h, **kw), tile_windows(w, **kw)
    output: Tensor | None = None
    total: Tensor | None = None
    for r0, r1 in rows:
        for c0, c1 in cols:
            piece = fn(inputs[..., r0 * in_per_cell : r1 * in_per_cell, c0 * in_per_cell : c1 * in_per_cell])
            if output is None:
                output = piece.new_zeros(*piece.shape[:-2], h * out_per_cell, w * out_per_cell)
                total = piece.new_zeros(h * out_per_cell, w * out_per_cell)
                weight_dtype = piece.dtype if piece.is_floating_point() else torch.float32
                row_weights = blend_weights(rows, out_per_cell, dtype=weight_dtype)
                col_weights = blend_weights(cols, out_per_cell, dtype=weight_dtype)
            assert total is not None
            weight = row_weights[rows.index((r0, r1))][:, None] * col_weights[cols.index((c0, c1))][None, :]
            weight = weight.to(piece.device)
            rs = slice(r0 * out_per_cell, r1 * out_per_cell)
            cs = slice(c0 * out_per_cell, c1 * out_per_cell)
            output[..., rs, cs] += piece * weight
            total[rs, cs] += weight
    assert output is not None and total is not None
    return output / total


def temporal_chunked_decode(
    decode: Callable[[Tensor], Tensor],
    latents: Tensor,
    *,
    temporal_factor: int,
    chunk_latents: int,
    context_latents: int,
) -> Tensor:
    """Decode ``[B, C, T, h, w]`` in chunks of ``chunk_latents`` latent frames (module docstring).

    ``decode`` maps ``[B, C, t, h, w]`` to ``[B, 3, 1 + tf * (t - 1), H, W]``. Returns
    ``[B, 3, 1 + tf * (T - 1), H, W]``.
    """
    num_latents = latents.shape[2]
    if chunk_latents >= num_latents:
        return decode(latents)
    pieces = []
    for start in range(0, num_latents, chunk_latents):
        end = min(start + chunk_latents, num_latents)
        first = max(0, start - context_latents)
        frames = decode(latents[:, :, first:end])
        expected = 1 + temporal_factor * (end - first - 1)
        if frames.shape[2] != expected:
            raise RuntimeError(
                f"decode: {end - first} latent frames gave {frames.shape[2]} pixel frames, "
                f"expected {expected}"
            )
        keep = frames.shape[2] if start == 0 else temporal_factor * (end - start)
        pieces.append(frames[:, :, frames.shape[2] - keep :])
    return torch.cat(pieces, dim=2)
