"""Beyond one machine (issue 15): the memory/FLOP planner, ``parallelize`` (FSDP2/HSDP, mixed
precision, activation checkpointing, regional compile), the device mesh, a Lightning strategy and
sharded checkpoints. Paper sections 3.1 (the model scaled) and 4.5 (the efficient 1080p path)."""

from skyreels_v4.scale.activations import ActivationMemory, activation_memory
from skyreels_v4.scale.plan import ParallelLayout, Plan, clip_tokens, count_forward_flops, plan

__all__ = [
    "ActivationMemory",
    "ParallelLayout",
    "Plan",
    "activation_memory",
    "clip_tokens",
    "count_forward_flops",
    "plan",
]
