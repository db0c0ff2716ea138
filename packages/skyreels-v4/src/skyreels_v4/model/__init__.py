"""The composed SkyReels-V4 model (paper 3.1-3.3): the joint transformer, its conditioning and its
weights folder. The pipeline (``skyreels_v4.pipeline``) and training (``skyreels_v4.training``) use it.
"""

from skyreels_v4.model.config_io import from_plain, to_plain
from skyreels_v4.model.keyframes import (
    KeyframeLayout,
    keyframe_token_positions,
    pack_keyframes,
    unpack_keyframes,
)
from skyreels_v4.model.transformer import (
    SKIP_DATA_STD,
    JointDenoiser,
    ModelCondition,
    PredictionType,
    SkyReelsV4Transformer,
    prediction_target,
    prediction_to_velocity,
    transformer_preset,
)
from skyreels_v4.model.video_sparse import (
    VideoSelfAttention,
    VideoSelfAttentionConfig,
    enable_video_sparse_attention,
)
from skyreels_v4.model.weights import (
    ShardPlan,
    build_and_load,
    load_state_into,
    plan_shards,
    read_component_config,
    save_component,
    weight_files,
)

__all__ = [
    "SKIP_DATA_STD",
    "JointDenoiser",
    "KeyframeLayout",
    "ModelCondition",
    "PredictionType",
    "ShardPlan",
    "SkyReelsV4Transformer",
    "VideoSelfAttention",
    "VideoSelfAttentionConfig",
    "build_and_load",
    "enable_video_sparse_attention",
    "from_plain",
    "keyframe_token_positions",
    "load_state_into",
    "pack_keyframes",
    "plan_shards",
    "prediction_target",
    "prediction_to_velocity",
    "read_component_config",
    "save_component",
    "to_plain",
    "transformer_preset",
    "unpack_keyframes",
    "weight_files",
]
