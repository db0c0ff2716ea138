"""Rotary position embeddings for video (t, h, w) and audio tokens, aligned in time.

Paper sections 3.1 (audio RoPE scaled onto video time) and 3.3 (eq. 9, references at negative t).
"""

from skyreels_av_rope.cross_modal import cross_modal_time_rope, time_only_positions
from skyreels_av_rope.reference import apply_rotary_reference, rotary_tables_reference
from skyreels_av_rope.rotary import (
    HUNYUAN_VIDEO_ROPE,
    RotaryConfig,
    RotaryEmbedding,
    apply_rotary,
    axis_frequencies,
)
from skyreels_av_rope.time_alignment import (
    AudioTimeAlignment,
    VideoLatentTimestamp,
    audio_positions,
    audio_rotary_config,
    num_video_latents,
    temporal_ratio,
    video_latent_times,
    video_seconds_positions,
)
from skyreels_av_rope.video_positions import (
    grid_positions_from_axes,
    in_context_video_positions,
    keyframe_positions,
    reference_positions,
    video_grid_positions,
)

__all__ = [
    "HUNYUAN_VIDEO_ROPE",
    "AudioTimeAlignment",
    "RotaryConfig",
    "RotaryEmbedding",
    "VideoLatentTimestamp",
    "apply_rotary",
    "apply_rotary_reference",
    "audio_positions",
    "audio_rotary_config",
    "axis_frequencies",
    "cross_modal_time_rope",
    "grid_positions_from_axes",
    "in_context_video_positions",
    "keyframe_positions",
    "num_video_latents",
    "reference_positions",
    "rotary_tables_reference",
    "temporal_ratio",
    "time_only_positions",
    "video_grid_positions",
    "video_latent_times",
    "video_seconds_positions",
]
