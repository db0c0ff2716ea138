"""Video token positions ``(t, h, w)``: the generated grid, references at negative t, keyframes.

All builders return float32 ``[L, 3]`` with columns ``(t, h, w)`` in token order t-major (t slowest,
w fastest), which is the order of ``rearrange(latent, "b c t h w -> b (t h w) c")`` after patching.
Grid sizes are post-patch (latent frames x patch rows x patch columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "grid_positions_from_axes",
    "in_context_video_positions",
    "keyframe_positions",
    "reference_positions",
    "video_grid_positions",
]


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name}: expected a finite real number, got {value!r}")
    return float(value)


def grid_positions_from_axes(t_values: Tensor, h_values: Tensor, w_values: Tensor) -> Tensor:
    """Cartesian product of per-axis coordinates in t-major order.

    Args:
        t_values, h_values, w_values: 1-D float tensors ``[T]``, ``[H]``, ``[W]`` on one device.

    Returns:
        float32 ``[T * H * W, 3]``; row ``(i * H + j) * W + k`` is ``(t_i, h_j, w_k)``.
    """
    for name, v in (("t_values", t_values), ("h_values", h_values), ("w_values", w_values)):
        if not isinstance(v, Tensor) or v.ndim != 1 or v.numel() == 0:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{name}: expected a non-empty 1-D tensor, got {shape}")
    t, h, w = torch.meshgrid(
        t_values.to(torch.float32), h_values.to(torch.float32), w_values.to(torch.float32), indexing="ij"
    )
    return torch.stack((t, h, w), dim=-1).reshape(-1, 3)


def video_grid_positions(
    t: int, h: int, w: int, *, t_offset: float = 0.0, device: torch.device | str | None = None
) -> Tensor:
    """Positions of a ``t x h x w`` post-patch latent grid: ``(t_offset + i, j, k)``.

    With ``t_offset=0`` this is HunyuanVideo's grid (paper eq. 9: video token frame j has t = j).

    Returns:
        float32 ``[t * h * w, 3]``, t-major.
    """
    t, h, w = _check_size("t", t), _check_size("h", h), _check_size("w", w)
    t_offset = _check_real("t_offset", t_offset)
    arange = lambda n: torch.arange(n, dtype=torch.float32, device=device)  # noqa: E731
    return grid_positions_from_axes(arange(t) + t_offset, arange(h), arange(w))


def reference_positions(
    grids: Sequence[tuple[int, int, int]], *, device: torch.device | str | None = None
) -> Tensor:
    """Positions of N reference latents (images ``t=1`` or clips ``t>1``) prepended to the video.

    Paper eq. 9: the condition latents' frames, counted in latent frames over all references in
    order, get ``t = -N_cond + i`` (``N_cond = sum of the references' t``), so the references occupy
    consecutive runs of negative temporal indices ending at -1, just before the generated video's
    ``t = 0``. Spatial indices are preserved: each reference uses ``0..h-1`` and ``0..w-1`` of its own
    grid (references are padded to a uniform resolution upstream, but any sizes work here).

    Args:
        grids: post-patch ``(t, h, w)`` of each reference, in the order they are concatenated.

    Returns:
        float32 ``[sum(t * h * w), 3]``: each reference's t-major block, concatenated in order.
    """
    if isinstance(grids, (str, bytes)) or not isinstance(grids, Sequence) or len(grids) == 0:
        raise ValueError(f"grids: expected a non-empty sequence of (t, h, w) tuples, got {grids!r}")
    sizes = []
    for n, grid in enumerate(grids):
        if not isinstance(grid, Sequence) or len(grid) != 3:
            raise ValueError(f"grids[{n}]: expected a (t, h, w) tuple of positive ints, got {grid!r}")
        sizes.append(tuple(_check_size(f"grids[{n}][{a}]", v) for a, v in enumerate(grid)))
    num_cond_frames = sum(t for t, _, _ in sizes)
    blocks, start = [], -num_cond_frames
    for t, h, w in sizes:
        blocks.append(video_grid_positions(t, h, w, t_offset=float(start), device=device))
        start += t
    return torch.cat(blocks, dim=0)


def in_context_video_positions(
    reference_grids: Sequence[tuple[int, int, int]],
    video_grid: tuple[int, int, int],
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Positions of ``[Z_cond; Z_video]`` (paper eq. 8): references at negative t, then the video grid.

    Args:
        reference_grids: post-patch ``(t, h, w)`` of each reference, in order; may be empty.
        video_grid: post-patch ``(t, h, w)`` of the generated video.

    Returns:
        float32 ``[L_ref + t * h * w, 3]``: :func:`reference_positions` then :func:`video_grid_positions`.
    """
    if not isinstance(video_grid, Sequence) or len(video_grid) != 3:
        raise ValueError(f"video_grid: expected a (t, h, w) tuple of positive ints, got {video_grid!r}")
    video = video_grid_positions(*video_grid, device=device)
    if isinstance(reference_grids, (list, tuple)) and len(reference_grids) == 0:
        return video  # no references: plain video grid (reference_positions rejects an empty list)
    return torch.cat((reference_positions(reference_grids, device=device), video), dim=0)


def keyframe_positions(
    frame_indices: Sequence[float],
    hi_res_hw: tuple[int, int],
    lo_res_hw: tuple[int, int],
    *,
    align: Literal["centers", "corners"] = "centers",
    device: torch.device | str | None = None,
) -> Tensor:
    """Positions of high-resolution keyframe tokens on the low-resolution video's grid.

    For the base model's joint low-res sequence + high-res keyframes (paper sections 1 and 4.5):
    keyframe n sits at temporal index ``frame_indices[n]`` (latent frames of the low-res timeline, may
    be fractional) and its ``H_hi x W_hi`` tokens get fractional spatial positions in low-res grid
    units, so that a keyframe token and the low-res token covering the same image point share their
    spatial phase.

    With ``s = lo / hi`` per axis, hi-res index ``y`` maps to
    ``align="centers"``: ``(y + 0.5) * s - 0.5`` (cell centres coincide; like ``align_corners=False``),
    ``align="corners"``: ``y * s`` (top-left corners coincide; first token at 0).

    Args:
        frame_indices: temporal index of each keyframe, in order.
        hi_res_hw: post-patch ``(H_hi, W_hi)`` of a keyframe.
        lo_res_hw: post-patch ``(H_lo, W_lo)`` of the low-res video.

    Returns:
        float32 ``[N * H_hi * W_hi, 3]``: each keyframe's row-major block, concatenated in order.
    """
    if isinstance(frame_indices, (str, bytes)) or not isinstance(frame_indices, Sequence):
        raise TypeError(f"frame_indices: expected a sequence of real numbers, got {frame_indices!r}")
    if len(frame_indices) == 0:
        raise ValueError("frame_indices: expected at least one keyframe index, got an empty sequence")
    times = [_check_real(f"frame_indices[{n}]", f) for n, f in enumerate(frame_indices)]
    for name, hw in (("hi_res_hw", hi_res_hw), ("lo_res_hw", lo_res_hw)):
        if not isinstance(hw, Sequence) or len(hw) != 2:
            raise ValueError(f"{name}: expected an (H, W) pair of positive ints, got {hw!r}")
    hi_h, hi_w = _check_size("hi_res_hw[0]", hi_res_hw[0]), _check_size("hi_res_hw[1]", hi_res_hw[1])
    lo_h, lo_w = _check_size("lo_res_hw[0]", lo_res_hw[0]), _check_size("lo_res_hw[1]", lo_res_hw[1])
    if align not in ("centers", "corners"):
        raise ValueError(f"align: expected 'centers' or 'corners', got {align!r}")

    def scaled(hi: int, lo: int) -> Tensor:
        index = torch.arange(hi, dtype=torch.float64, device=device)
        scale = lo / hi
        # float64 then float32: keeps e.g. 0.5-steps exact and avoids drift on large grids.
        coords = (index + 0.5) * scale - 0.5 if align == "centers" else index * scale
        return coords.to(torch.float32)

    t_values = torch.tensor(times, dtype=torch.float32, device=device)
    rows, cols = scaled(hi_h, lo_h), scaled(hi_w, lo_w)
    blocks = [grid_positions_from_axes(t_values[n : n + 1], rows, cols) for n in range(len(times))]
    return torch.cat(blocks, dim=0)
