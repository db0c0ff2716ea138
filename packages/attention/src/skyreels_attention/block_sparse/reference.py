"""The `torch` backend: the fp32 reference every other block-sparse backend is tested against.

For each (batch, head, query block) it gathers the selected key/value blocks and runs a plain
masked softmax over them, in float32 (float64 for float64 inputs), differentiable by autograd on
any device. Query blocks are processed in chunks so the gathered keys stay within a memory budget.

Shape legend: B batch, H heads, N query blocks in a chunk, S = block_size, C index width, D head dim.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from .index import num_blocks

__all__ = ["block_sparse_attention_reference"]

# Elements of the largest per-chunk intermediate (gathered keys or scores): 2^25 fp32 = 128 MiB.
_CHUNK_ELEMENTS = 1 << 25


def _to_blocks(x: Tensor, block_size: int, dtype: torch.dtype) -> Tensor:
    """[B, L, H, D] -> [B, H, nBlocks, S, D], zero-padded to whole blocks, cast to `dtype`."""
    pad = num_blocks(x.shape[1], block_size) * block_size - x.shape[1]
    x = torch.nn.functional.pad(x.to(dtype), (0, 0, 0, 0, 0, pad))
    return rearrange(x, "b (n s) h d -> b h n s d", s=block_size)


def block_sparse_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_index: Tensor,
    block_counts: Tensor,
    *,
    block_size: int,
    kv_valid_lengths: Tensor | None,
    scale: float,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """Exact block-sparse attention by gathering the selected blocks; inputs already validated.

    q [B, Lq, H, D], k/v [B, Lk, H, D], block_index [B, H, nQB, C], block_counts [B, H, nQB],
    kv_valid_lengths [B] or None -> [B, Lq, H, D] in q's dtype. Rows with no attended key are 0.
    `compute_dtype` defaults to float32 (float64 for float64 inputs); the tests also run it in the
    input's low precision, as "plain torch math in that dtype" for the kernel parity rule.
    """
    batch, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    compute = compute_dtype or (torch.float64 if q.dtype == torch.float64 else torch.float32)
    # The scale is folded into q (small) rather than applied to the scores (large).
    q_blocks = _to_blocks(q, block_size, compute) * scale  # [B, H, nQB, S, D]
    k_blocks = _to_blocks(k, block_size, compute)  # [B, H, nKB, S, D]
    v_blocks = _to_blocks(v, block_size, compute)
    n_kv_blocks = k_blocks.shape[2]

    # 1. Keys at or past the valid length (this includes the padding of a partial last block,
    #    since valid <= Lk) are zeroed once, so even non-finite padding cannot leak in.
    valid = kv_valid_lengths if kv_valid_lengths is not None else torch.full((batch,), lk, device=q.device)
    position_ok = torch.arange(n_kv_blocks * block_size, device=q.device) < valid[:, None]  # [B, nKB*S]
    position_ok = rearrange(position_ok, "b (n s) -> b 1 n s 1", s=block_size)
    k_blocks = k_blocks.masked_fill(~position_ok, 0.0)
    v_blocks = v_blocks.masked_fill(~position_ok, 0.0)

    # 2. Which gathered keys are attended: the slot is within the count and the key is valid.
    width = block_index.shape[-1]
    slot_used = torch.arange(width, device=q.device) < block_counts[..., None]  # [B, H, nQB, C]
    blocks = torch.where(slot_used, block_index.long(), 0)
    key_pos = blocks[..., None] * block_size + torch.arange(block_size, device=q.device)  # [B,H,nQB,C,S]
    key_ok = slot_used[..., None] & (key_pos < valid.view(batch, 1, 1, 1, 1))
    key_ok = rearrange(key_ok, "b h n c s -> b h n 1 (c s)")
    # A query block with no attended key keeps its (finite) raw scores, so the softmax stays
    # NaN-free, and its output is zeroed afterwards: the documented result, with zero gradients.
    any_ok = key_ok.any(-1, keepdim=True)  # [B, H, nQB, 1, 1]
    drop = ~key_ok & any_ok

    # Row of each selected block in the flattened [B*H*nKB, S, D] key/value tensors.
    bh = torch.arange(batch * heads, device=q.device).view(batch, heads, 1, 1)
    rows = bh * n_kv_blocks + blocks  # [B, H, nQB, C]
    k_rows, v_rows = k_blocks.flatten(0, 2), v_blocks.flatten(0, 2)
    per_block = batch * heads * width * block_size * max(head_dim, block_size)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, per_block))
    outputs = []
    for start in range(0, q_blocks.shape[2], chunk):
        stop = start + chunk
        # 3. Gather the selected key/value blocks of this chunk of query blocks.
        sel = rows[:, :, start:stop]  # [B, H, N, C]
        gathered = (batch, heads, sel.shape[2], width * block_size, head_dim)
        k_sel = k_rows.index_select(0, sel.reshape(-1)).view(gathered)  # [B, H, N, C*S, D]
        v_sel = v_rows.index_select(0, sel.reshape(-1)).view(gathered)
        # 4. Masked softmax over the gathered keys, then the weighted values.
        scores = q_blocks[:, :, start:stop] @ k_sel.transpose(-1, -2)  # [B, H, N, S, C*S]
        weights = torch.softmax(scores.masked_fill(drop[:, :, start:stop], float("-inf")), dim=-1)
        outputs.append((weights @ v_sel) * any_ok[:, :, start:stop])
    out = rearrange(torch.cat(outputs, dim=2), "b h n s d -> b (n s) h d")
    return out[:, :lq].to(q.dtype)
