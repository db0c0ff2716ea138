"""The block index format and the tables derived from it.

Index format (shared by every backend). With `block_size` tokens per block, a sequence of `L`
tokens has `ceil(L / block_size)` blocks; the last one may be partial. For query block `i` of
batch `b` and head `h`, the key blocks it attends to are

    block_index[b, h, i, :block_counts[b, h, i]]        (block_index [B, H, nQB, C], int)

Entries after the count are ignored (pad them with -1). The selected blocks must be distinct.
Order does not matter: the result is the softmax over the union of the selected keys.

Derived here, on the device, without host loops:
- `selection_table`: the dense `[B, H, nQB, nKB]` boolean form (flex's block mask needs it);
- `ordered_blocks`: a table back to the ordered (index, count) form;
- `reverse_block_index`: for every key block, the query blocks that selected it (the Triton and
  C++ backwards walk key blocks to accumulate dK and dV without atomics), from the selected
  entries only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "blocks_to_keep",
    "num_blocks",
    "ordered_blocks",
    "random_block_index",
    "reverse_block_index",
    "selection_table",
]


def num_blocks(length: int, block_size: int) -> int:
    """Blocks covering `length` tokens (the last one partial when it does not divide)."""
    return -(-length // block_size)


def selection_table(block_index: Tensor, block_counts: Tensor, n_kv_blocks: int) -> Tensor:
    """block_index [B, H, nQB, C], block_counts [B, H, nQB] -> selected [B, H, nQB, nKB] bool."""
    slots = torch.arange(block_index.shape[-1], device=block_index.device)
    in_count = slots < block_counts[..., None]
    # Unused slots write into one spare column that is dropped afterwards.
    columns = torch.where(in_count, block_index.long(), n_kv_blocks)
    table = torch.zeros(
        (*block_index.shape[:-1], n_kv_blocks + 1), dtype=torch.bool, device=block_index.device
    )
    table.scatter_(-1, columns, True)
    return table[..., :n_kv_blocks]


def ordered_blocks(table: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
    """selected [..., R, N] bool -> (index [..., R, width] int32, counts [..., R] int32).

    Row r lists the columns set in `table[..., r, :]` in increasing order, padded with -1.
    `width` defaults to the largest count (one host sync); pass `N` to avoid the sync.
    """
    counts = table.sum(-1, dtype=torch.int32)
    # A stable descending sort of 0/1 puts the selected columns first, in increasing order.
    order = torch.sort(table.to(torch.uint8), dim=-1, descending=True, stable=True).indices
    if width is None:
        width = max(1, int(counts.max())) if counts.numel() else 1
    order = order[..., :width].to(torch.int32)
    slots = torch.arange(width, device=table.device)
    index = torch.where(slots < counts[..., None], order, -1)
    return index.contiguous(), counts.contiguous()


def reverse_block_index(block_index: Tensor, block_counts: Tensor, n_kv_blocks: int) -> tuple[Tensor, Tensor]:
    """Transpose the index: for key block j, the query blocks i that selected it (increasing i).

    block_index [B, H, nQB, C], block_counts [B, H, nQB]
    -> (query_index [B, H, nKB, C'] int32 padded with -1, query_counts [B, H, nKB] int32).

    Built from the selected entries only (memory O(B·H·nQB·C), not the dense [B, H, nKB, nQB]
    table, which is 3.2 GB per sample at 16-token blocks and L = 64k); one host sync for C'.
    Entries out of range (possible with value checks switched off) are dropped.
    """
    batch, heads, n_q_blocks, width = block_index.shape
    device = block_index.device
    index = block_index.long()
    slots = torch.arange(width, device=device)
    used = (slots < block_counts[..., None]) & (index >= 0) & (index < n_kv_blocks)
    rows = torch.arange(batch * heads, device=device).view(batch, heads, 1, 1) * n_kv_blocks
    keys = (rows + index)[used]  # row of [B*H*nKB] per entry, entries in (b, h, i, slot) order
    queries = torch.arange(n_q_blocks, device=device).view(1, 1, -1, 1).expand_as(index)[used]
    # A stable sort keeps each key block's query blocks in increasing order.
    keys, order = torch.sort(keys, stable=True)
    queries = queries[order]
    counts = torch.bincount(keys, minlength=batch * heads * n_kv_blocks)
    out_width = max(1, int(counts.max())) if counts.numel() else 1
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(keys.numel(), device=device) - starts[keys]
    query_index = torch.full((batch * heads * n_kv_blocks, out_width), -1, dtype=torch.int32, device=device)
    query_index[keys, position] = queries.to(torch.int32)
    shape = (batch, heads, n_kv_blocks)
    return query_index.view(*shape, out_width), counts.to(torch.int32).view(shape)


def blocks_to_keep(sparsity: float, n_kv_blocks: int) -> int:
    """Key blocks per query block at `sparsity` (fraction of blocks skipped): ceil((1 - s) * nKB).

    This is VSA's top-K rule; rounding first keeps e.g. (1 - 0.9) * 40 = 4.0000000001 at 4.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    return max(1, min(n_kv_blocks, math.ceil(round((1.0 - sparsity) * n_kv_blocks, 9))))


def random_block_index(
    batch: int,
    heads: int,
    n_q_blocks: int,
    n_kv_blocks: int,
    *,
    max_blocks: int,
    variable_counts: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """A random valid index: each row selects `max_blocks` distinct key blocks uniformly.

    With `variable_counts`, each row keeps a uniform random count in [0, max_blocks] of them and
    the rest is -1 padding. Returns (block_index [B, H, nQB, max_blocks] int32,
    block_counts [B, H, nQB] int32), drawn on the CPU (reproducible with `generator`) and moved
    to `device`. Used by the tests and benchmarks; handy for trying the op.
    """
    if not 1 <= max_blocks <= n_kv_blocks:
        raise ValueError(f"max_blocks must lie in [1, n_kv_blocks={n_kv_blocks}], got {max_blocks}")
    scores = torch.rand(batch, heads, n_q_blocks, n_kv_blocks, generator=generator)
    index = scores.topk(max_blocks, dim=-1).indices.to(torch.int32)  # distinct by construction
    if variable_counts:
        counts = torch.randint(0, max_blocks + 1, (batch, heads, n_q_blocks), generator=generator)
    else:
        counts = torch.full((batch, heads, n_q_blocks), max_blocks)
    counts = counts.to(torch.int32)
    index = torch.where(torch.arange(max_blocks) < counts[..., None], index, -1)
    return index.to(device).contiguous(), counts.to(device).contiguous()
