"""Video Sparse Attention (VSA) and the super-resolution / frame-interpolation refiner (paper section 4.5)."""

from skyreels_refiner_vsa.coarse import CoarseAttention, coarse_attention, pool_blocks
from skyreels_refiner_vsa.reference import (
    selected_block_table,
    video_sparse_attention_reference,
    vsa_token_mask,
)
from skyreels_refiner_vsa.refiner import (
    VideoRefiner,
    VideoRefinerConfig,
    refiner_config_from_base,
    refiner_from_base,
)
from skyreels_refiner_vsa.refiner_blocks import (
    GridLayout,
    GridLayoutSlot,
    JointAttend,
    attention_stage_with,
    install_vsa_attention_stages,
    vsa_attention_stage,
    vsa_joint_attention,
)
from skyreels_refiner_vsa.refiner_condition import (
    RefinerCondition,
    UpsampleMode,
    build_refiner_condition,
    interpolated_num_frames,
    upsample_latents,
)
from skyreels_refiner_vsa.selection import keep_block_count, select_key_blocks
from skyreels_refiner_vsa.sparse_attention import VSAOutput, video_sparse_attention
from skyreels_refiner_vsa.sparsity import SparsityRamp
from skyreels_refiner_vsa.tiling import CubeTiling, cube_tiling
from skyreels_refiner_vsa.vsa_module import VideoSparseAttention, VSAConfig

__all__ = [
    "CoarseAttention",
    "CubeTiling",
    "GridLayout",
    "GridLayoutSlot",
    "JointAttend",
    "RefinerCondition",
    "SparsityRamp",
    "UpsampleMode",
    "VSAConfig",
    "VSAOutput",
    "VideoRefiner",
    "VideoRefinerConfig",
    "VideoSparseAttention",
    "attention_stage_with",
    "build_refiner_condition",
    "coarse_attention",
    "cube_tiling",
    "install_vsa_attention_stages",
    "interpolated_num_frames",
    "keep_block_count",
    "pool_blocks",
    "refiner_config_from_base",
    "refiner_from_base",
    "select_key_blocks",
    "selected_block_table",
    "upsample_latents",
    "video_sparse_attention",
    "video_sparse_attention_reference",
    "vsa_attention_stage",
    "vsa_joint_attention",
    "vsa_token_mask",
]
