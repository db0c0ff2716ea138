"""High-resolution keyframes generated jointly with the low-resolution clip (paper 4.5's "joint
prediction task"): where they ride in the solver's state and how the transformer sees them.

The base model denoises, in one sequence, the low-res clip's latents ``[B, C, T, h, w]`` and N
high-res keyframe latents ``[B, C, N, H, W]`` (the latent frames ``frame_indices`` of the same clip at
the refiner's size). In the transformer the keyframes are reference-like tokens (prepended, eq. 8)
that are noisy at the clip's σ and whose outputs are read back: their input is ``Concat(V, I, M)``
like the clip's (I = the high-res black-frame latent, M = 0), and their RoPE positions are the
keyframe's latent time and *fractional* spatial positions on the low-res grid
(``skyreels_av_rope.keyframe_positions``), so a keyframe token and the low-res token covering the same
image point share their phases (ARCHITECTURE.md section 3).

To keep every solver, guidance and batching rule unchanged, the keyframes travel inside the video
state: flattened, zero-padded to whole low-res frames and appended along time as ``K`` extra
"slots" -> ``[B, C, T + K, h, w]`` (``pack_keyframes`` / ``unpack_keyframes``). The padding cells are
marked kept (M = 1, I = 0, noise 0), so their velocity is 0 and they stay 0. ``ModelCondition.keyframes``
(a ``KeyframeLayout``) tells ``JointDenoiser`` that the state is packed.

Shape legend: B batch, C latent channels, T/h/w the low-res latent grid, N keyframes, H/W their latent
size, K slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from skyreels_av_rope import keyframe_positions, video_grid_positions
from skyreels_v4.errors import SkyReelsError

__all__ = ["KeyframeLayout", "keyframe_token_positions", "pack_keyframes", "unpack_keyframes"]


@dataclass(frozen=True, kw_only=True)
class KeyframeLayout:
    """Where N high-res keyframes ride in a packed video state.

    Attributes:
        frame_indices: the low-res latent frame each keyframe shows, distinct, in ``[0, base_frames)``.
        height, width: the keyframes' latent size ``H x W``.
        base_frames: ``T``, the clip's latent frames (the slots follow them).
        base_height, base_width: ``h x w``, the clip's latent size (one slot holds ``h·w`` cells).
    """

    frame_indices: tuple[int, ...]
    height: int
    width: int
    base_frames: int
    base_height: int
    base_width: int

    def __post_init__(self) -> None:
        for name in ("height", "width", "base_frames", "base_height", "base_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SkyReelsError(f"keyframes.{name}: expected a positive int, got {value!r}")
        indices = self.frame_indices
        if (
            not isinstance(indices, tuple)
            or not indices
            or any(isinstance(i, bool) or not isinstance(i, int) for i in indices)
            or len(set(indices)) != len(indices)
            or not all(0 <= i < self.base_frames for i in indices)
        ):
            raise SkyReelsError(
                f"keyframes.frame_indices: expected distinct latent frame indices in "
                f"[0, {self.base_frames}), got {indices!r}"
            )

    @property
    def count(self) -> int:
        """``N``."""
        return len(self.frame_indices)

    @property
    def slots(self) -> int:
        """``K``: low-res frames of ``h·w`` cells that hold ``N·H·W`` keyframe cells."""
        return math.ceil(self.count * self.height * self.width / (self.base_height * self.base_width))


def pack_keyframes(video: Tensor, keyframes: Tensor, layout: KeyframeLayout, *, fill: float = 0.0) -> Tensor:
    """``[B, C, T, h, w]`` + ``[B, C, N, H, W]`` -> ``[B, C, T + K, h, w]`` (padding cells = ``fill``)."""
    b, c, t, h, w = video.shape
    expected = (b, c, layout.count, layout.height, layout.width)
    grid = (layout.base_frames, layout.base_height, layout.base_width)
    if (t, h, w) != grid:
        raise SkyReelsError(f"video: expected the layout's grid {grid}, got {(t, h, w)}")
    if tuple(keyframes.shape) != expected:
        raise SkyReelsError(f"keyframes: expected {expected}, got {tuple(keyframes.shape)}")
    cells = layout.slots * h * w
    flat = keyframes.reshape(b, c, -1).to(video.dtype)
    flat = torch.nn.functional.pad(flat, (0, cells - flat.shape[-1]), value=fill)
    return torch.cat([video, flat.reshape(b, c, layout.slots, h, w)], dim=2)


def unpack_keyframes(state: Tensor, layout: KeyframeLayout) -> tuple[Tensor, Tensor]:
    """The inverse of ``pack_keyframes``: ``(video [B, C, T, h, w], keyframes [B, C, N, H, W])``."""
    b, c, total = state.shape[:3]
    if total != layout.base_frames + layout.slots:
        raise SkyReelsError(
            f"state: expected {layout.base_frames} + {layout.slots} latent frames (clip + keyframe slots), "
            f"got {total}"
        )
    video, slots = state[:, :, : layout.base_frames], state[:, :, layout.base_frames :]
    n = layout.count * layout.height * layout.width
    keyframes = slots.reshape(b, c, -1)[..., :n].reshape(b, c, layout.count, layout.height, layout.width)
    return video, keyframes


def keyframe_token_positions(layout: KeyframeLayout, patch_size: tuple[int, int, int]) -> Tensor:
    """float32 ``[N·H'·W' + L, 3]``: the keyframe tokens (fractional, on the low-res grid), then the
    clip's grid; ``'`` = after the patch embedding."""
    pt, ph, pw = patch_size
    if pt != 1:
        raise SkyReelsError(f"keyframes: need a temporal patch of 1 (one token row per frame), got {pt}")
    for name, value, patch in (
        ("height", layout.height, ph),
        ("width", layout.width, pw),
        ("base_height", layout.base_height, ph),
        ("base_width", layout.base_width, pw),
    ):
        if value % patch:
            raise SkyReelsError(f"keyframes.{name}: expected a multiple of the patch {patch}, got {value}")
    hi = (layout.height // ph, layout.width // pw)
    lo = (layout.base_height // ph, layout.base_width // pw)
    return torch.cat(
        [
            keyframe_positions([float(i) for i in layout.frame_indices], hi, lo),
            video_grid_positions(layout.base_frames, *lo),
        ]
    )
