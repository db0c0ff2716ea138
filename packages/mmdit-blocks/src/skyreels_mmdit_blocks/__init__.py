"""Hybrid dual/single-stream MMDiT blocks and the two-branch joint audio-video transformer.

Paper section 3.1 (eqs. 1-5). The video branch is numerically HunyuanVideo's transformer and loads
its checkpoints (diffusers or official names); layers HunyuanVideo lacks start at zero.
"""

from skyreels_mmdit_blocks.av_cross_attention import (
    AudioVideoCrossAttention,
    AVExchangeOrder,
    CrossModalAttention,
    key_mask_from_bool,
    time_window_mask,
)
from skyreels_mmdit_blocks.block_context import BlockContext, BlockState, Rotary
from skyreels_mmdit_blocks.branch import BranchInputs, MMDiTBranch
from skyreels_mmdit_blocks.branch_config import MMDiTBranchConfig, Modality, TextEmbeddingKind
from skyreels_mmdit_blocks.condition_embed import (
    ConditionEmbedding,
    EmbeddingMLP,
    sinusoidal_timestep_embedding,
)
from skyreels_mmdit_blocks.dual_stream import DualStreamBlock
from skyreels_mmdit_blocks.feed_forward import Activation, FeedForward, mlp_hidden_dim
from skyreels_mmdit_blocks.final_layer import FinalLayer
from skyreels_mmdit_blocks.frame_position import FramePositionEmbedding, frame_position_features
from skyreels_mmdit_blocks.hunyuan_checkpoint import (
    ImportReport,
    WeightImportError,
    detect_checkpoint_format,
    infer_hunyuan_branch_config,
    read_safetensors_directory,
)
from skyreels_mmdit_blocks.hunyuan_names import CheckpointFormat, NameRule, hunyuan_name_rules
from skyreels_mmdit_blocks.joint import JointAudioVideoTransformer, JointOutput, JointReferenceOutput
from skyreels_mmdit_blocks.joint_config import JointAudioVideoTransformerConfig, uniform_depth_mapping
from skyreels_mmdit_blocks.modulation import Modulation, modulate
from skyreels_mmdit_blocks.multihead import HeadRMSNorm
from skyreels_mmdit_blocks.param_count import (
    BranchParameterCounts,
    JointParameterCounts,
    count_parameters,
    parameter_counts,
)
from skyreels_mmdit_blocks.patch_embed import (
    AudioPatchEmbed,
    VideoGrid,
    VideoPatchEmbed,
    patchify_video,
    unpatchify_audio,
    unpatchify_video,
    widen_patch_embed,
)
from skyreels_mmdit_blocks.presets import PRESET_NAMES, PresetName, joint_preset
from skyreels_mmdit_blocks.single_stream import SingleStreamBlock
from skyreels_mmdit_blocks.staged_block import StagedBlock
from skyreels_mmdit_blocks.text_cross_attention import TextCrossAttention, skipping_zero_text_cross_attention
from skyreels_mmdit_blocks.text_mask import text_lengths_from_mask
from skyreels_mmdit_blocks.text_refiner import TextTokenRefiner, TokenRefinerBlock, masked_mean
from skyreels_mmdit_blocks.time_phase import TimePhaseEmbedding, time_phase_features
from skyreels_mmdit_blocks.weight_import import (
    build_video_branch_from_hunyuan,
    export_hunyuan_state_dict,
    load_hunyuan_video_weights,
)
from skyreels_mmdit_blocks.zero_layers import is_zero_linear

__all__ = [
    "PRESET_NAMES",
    "AVExchangeOrder",
    "Activation",
    "AudioPatchEmbed",
    "AudioVideoCrossAttention",
    "BlockContext",
    "BlockState",
    "BranchInputs",
    "BranchParameterCounts",
    "CheckpointFormat",
    "ConditionEmbedding",
    "CrossModalAttention",
    "DualStreamBlock",
    "EmbeddingMLP",
    "FeedForward",
    "FinalLayer",
    "FramePositionEmbedding",
    "HeadRMSNorm",
    "ImportReport",
    "JointAudioVideoTransformer",
    "JointAudioVideoTransformerConfig",
    "JointOutput",
    "JointParameterCounts",
    "JointReferenceOutput",
    "MMDiTBranch",
    "MMDiTBranchConfig",
    "Modality",
    "Modulation",
    "NameRule",
    "PresetName",
    "Rotary",
    "SingleStreamBlock",
    "StagedBlock",
    "TextCrossAttention",
    "TextEmbeddingKind",
    "TextTokenRefiner",
    "TimePhaseEmbedding",
    "TokenRefinerBlock",
    "VideoGrid",
    "VideoPatchEmbed",
    "WeightImportError",
    "build_video_branch_from_hunyuan",
    "count_parameters",
    "detect_checkpoint_format",
    "export_hunyuan_state_dict",
    "frame_position_features",
    "hunyuan_name_rules",
    "infer_hunyuan_branch_config",
    "is_zero_linear",
    "joint_preset",
    "key_mask_from_bool",
    "load_hunyuan_video_weights",
    "masked_mean",
    "mlp_hidden_dim",
    "modulate",
    "parameter_counts",
    "patchify_video",
    "read_safetensors_directory",
    "sinusoidal_timestep_embedding",
    "skipping_zero_text_cross_attention",
    "text_lengths_from_mask",
    "time_phase_features",
    "time_window_mask",
    "uniform_depth_mapping",
    "unpatchify_audio",
    "unpatchify_video",
    "widen_patch_embed",
]
