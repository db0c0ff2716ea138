"""Time-only rotary tables for the audio-video cross-attention (paper eq. 5).

In ``a' = a + CrossAttn(q=a, kv=v)`` and ``v'' = v' + CrossAttn(q=v', kv=a')`` queries and keys come
from different modalities, so neither side's spatial coordinates mean anything to the other. Both
sides are rotated by their time alone, with one shared :class:`RotaryConfig`: the time goes on axis 0
and every other axis gets position 0 (angle 0, i.e. those channel pairs pass through unrotated).
The logit ``q_i . k_j`` then depends on positions only through ``t_i - t_j``.

The two sides' positions must already be on one time axis, e.g. video ``video_grid_positions`` with
audio ``audio_positions(..., alignment=RATIO)``, or both in seconds (``SECONDS``).
"""

from __future__ import annotations

from torch import Tensor

from skyreels_av_rope.rotary import RotaryEmbedding

__all__ = ["cross_modal_time_rope", "time_only_positions"]


def time_only_positions(positions: Tensor, num_axes: int) -> Tensor:
    """Keep column 0 (time) of ``positions`` and zero the rest, widened or narrowed to ``num_axes``.

    Args:
        positions: ``[L, A]`` or ``[B, L, A]`` with time in column 0 (any A >= 1).
        num_axes: columns of the result.

    Returns:
        float32 ``[.., L, num_axes]``.
    """
    if not isinstance(positions, Tensor) or positions.ndim not in (2, 3) or positions.shape[-1] < 1:
        shape = tuple(positions.shape) if isinstance(positions, Tensor) else type(positions).__name__
        raise ValueError(f"positions: expected [L, A] or [B, L, A] with time in column 0, got {shape}")
    if isinstance(num_axes, bool) or not isinstance(num_axes, int) or num_axes < 1:
        raise ValueError(f"num_axes: expected a positive int, got {num_axes!r}")
    out = positions.new_zeros((*positions.shape[:-1], num_axes), dtype=positions.dtype).float()
    out[..., 0] = positions[..., 0]
    return out


def cross_modal_time_rope(
    video_positions: Tensor, audio_positions: Tensor, *, rope: RotaryEmbedding
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """cos/sin for both sides of an audio-video cross-attention, rotating by time only.

    Args:
        video_positions: ``[L_v, A_v]`` or ``[B, L_v, A_v]``, time in column 0 (e.g. ``(t, h, w)``).
        audio_positions: ``[L_a, A_a]`` or ``[B, L_a, A_a]``, time in column 0, same time units.
        rope: shared embedding; ``axes_dims=(D,)`` rotates all channels by time,
            a video split such as ``(16, 56, 56)`` rotates only the first axis' channels.

    Returns:
        ``((video_cos, video_sin), (audio_cos, audio_sin))``, float32, ``[.., L, D // 2]`` each;
        apply with :func:`apply_rotary` to the video and audio queries/keys respectively.
    """
    if not isinstance(rope, RotaryEmbedding):
        raise TypeError(f"rope: expected a RotaryEmbedding, got {type(rope).__name__}")
    num_axes = rope.config.num_axes
    video = rope(time_only_positions(video_positions, num_axes))
    audio = rope(time_only_positions(audio_positions, num_axes))
    return video, audio
