"""Cutting a replicated global sequence into per-rank shards and joining them back.

Rank r of a group of P holds the contiguous global positions r·Ls .. (r+1)·Ls - 1, Ls = ceil(L/P);
a sequence that P does not divide is zero-padded at its global end, so the padding sits on the last
ranks and `ulysses_attention(..., global_seq_len=L)` can mask it with one key-length per sample.
Compute RoPE tables for global positions and shard them with the same function (FACTS.md).
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor, nn

from .collectives import all_gather, check_group

__all__ = ["gather_sequence", "shard_length", "shard_sequence"]


def shard_length(global_seq_len: int, group_size: int) -> int:
    """Ls = ceil(L / P), the per-rank shard length of a global sequence of `global_seq_len` tokens."""
    if global_seq_len < 1 or group_size < 1:
        raise ValueError(
            f"global_seq_len, group_size: expected both >= 1, got {global_seq_len} and {group_size}"
        )
    return -(-global_seq_len // group_size)


def shard_sequence(x: Tensor, *, group: dist.ProcessGroup, dim: int = 1) -> Tensor:
    """This rank's shard of a global sequence that is identical on every rank.

    x: `[.., L, ..]` -> `[.., Ls, ..]` with Ls = ceil(L / P), zero-padded at the global end when P
    does not divide L. No communication. The gradient each rank computes for `x` is partial (zero
    outside its shard); the full gradient is the sum over the group.
    """
    check_group(group)
    P, rank = dist.get_world_size(group), dist.get_rank(group)
    dim = dim % x.ndim
    L = x.shape[dim]
    Ls = shard_length(L, P)
    if Ls * P != L:
        # F.pad lists (left, right) pairs from the last axis backwards.
        x = nn.functional.pad(x, [0, 0] * (x.ndim - 1 - dim) + [0, Ls * P - L])
    return x.narrow(dim, rank * Ls, Ls)


def gather_sequence(
    x: Tensor, *, group: dist.ProcessGroup, global_seq_len: int | None = None, dim: int = 1
) -> Tensor:
    """Inverse of `shard_sequence`: x `[.., Ls, ..]` -> `[.., global_seq_len, ..]` on every rank.

    global_seq_len: the real length L, to drop the padding (default P·Ls, keep everything).
    The result is replicated: its backward is a reduce-scatter (sum), so a loss computed on it on
    every rank must be divided by P.
    """
    gathered = all_gather(x, group=group, dim=dim)
    if global_seq_len is None:
        return gathered
    dim = dim % x.ndim
    if isinstance(global_seq_len, bool) or not 1 <= global_seq_len <= gathered.shape[dim]:
        raise ValueError(
            f"global_seq_len: expected an int in [1, P·Ls = {gathered.shape[dim]}], got {global_seq_len!r}"
        )
    return gathered.narrow(dim, 0, global_seq_len)
