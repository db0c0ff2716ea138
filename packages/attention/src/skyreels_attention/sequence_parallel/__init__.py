"""Ulysses sequence parallelism (ARCHITECTURE.md section 6; docs/sequence-parallel.md).

`ulysses_attention` / `UlyssesAttention` run attention over a sequence sharded across a process
group plus replicated tokens; `ulysses_cross_attention` lets replicated queries read that sequence;
`shard_sequence` / `gather_sequence` cut and join it; `all_to_all`, `all_gather` and
`reduce_scatter` are the differentiable collectives underneath.
"""

from .collectives import all_gather, all_to_all, reduce_scatter
from .sharding import gather_sequence, shard_length, shard_sequence
from .ulysses import (
    AttentionFn,
    UlyssesAttention,
    UlyssesAttentionOutput,
    ulysses_attention,
    ulysses_cross_attention,
)

__all__ = [
    "AttentionFn",
    "UlyssesAttention",
    "UlyssesAttentionOutput",
    "all_gather",
    "all_to_all",
    "gather_sequence",
    "reduce_scatter",
    "shard_length",
    "shard_sequence",
    "ulysses_attention",
    "ulysses_cross_attention",
]
