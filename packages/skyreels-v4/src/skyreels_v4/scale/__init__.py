"""Beyond one machine (issue 15): the memory/FLOP planner, ``parallelize`` (FSDP2/HSDP, mixed
precision, activation checkpointing, regional compile), the device mesh, a Lightning strategy and
sharded checkpoints, guidance branches split over spare ranks in generation. Paper sections 3.1 (the
model scaled) and 4.5 (the efficient 1080p path)."""

from skyreels_v4.scale.activations import ActivationMemory, activation_memory
from skyreels_v4.scale.checkpoint import export_pretrained, is_sharded, load_sharded, save_sharded
from skyreels_v4.scale.guidance_parallel import apply_guidance_parallel
from skyreels_v4.scale.parallelize import (
    ActivationCheckpointing,
    CompileMode,
    MixedPrecision,
    ParallelDims,
    build_device_mesh,
    parallelize,
)
from skyreels_v4.scale.plan import ParallelLayout, Plan, clip_tokens, count_forward_flops, plan
from skyreels_v4.scale.sequence_parallel import apply_sequence_parallel

__all__ = [
    "ActivationCheckpointing",
    "ActivationMemory",
    "CompileMode",
    "MixedPrecision",
    "ParallelDims",
    "ParallelLayout",
    "Plan",
    "activation_memory",
    "apply_guidance_parallel",
    "apply_sequence_parallel",
    "build_device_mesh",
    "clip_tokens",
    "count_forward_flops",
    "export_pretrained",
    "is_sharded",
    "load_sharded",
    "parallelize",
    "plan",
    "save_sharded",
]
