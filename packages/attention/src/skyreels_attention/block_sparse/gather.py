"""The `gather` backend: selected key/value blocks gathered per query block, then fused SDPA.

For each query block the K selected key/value blocks are gathered into one [K*S, D] sequence and
`torch.nn.functional.scaled_dot_product_attention` attends the block's S queries to it. The heavy
arithmetic thus runs in SDPA's fused kernel (the flash kernel on CPU) in the input dtype, instead
of the reference's fp32 matmul + softmax or compiled flex. A boolean mask is built only when some
key must be hidden (a -1 padding slot, a key past `kv_valid_lengths`, or the missing tail of a
partial last block); otherwise SDPA runs unmasked. Query blocks go in chunks, which bounds the
gathered copy and keeps it cache-sized. Autograd differentiates everything (index_select and SDPA
both have backward passes), so forward and backward work on every device SDPA runs on.

Shape legend: B batch, H heads, N query blocks in a chunk, S = block_size, C index width, D head dim.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from .index import num_blocks

__all__ = ["block_sparse_attention_gather"]

# Elements of the gathered keys per chunk: 2^22 (16 MiB fp32). Chosen with the VSA benchmark on an
# idle 2-core CPU (torch 2.13): `python -m benchmarks.report benchmarks/test_vsa.py -k "16384 and
# (sdpa or gather) and 0.875"` gave 3.4x over dense SDPA with 2^23 and 3.7-4.3x with 2^22
# (docs/benchmarks/vsa.md). On a heavily shared machine op launches cost scheduler slices and
# small chunks lose instead.
_CHUNK_ELEMENTS = 1 << 22


def _to_blocks(x: Tensor, block_size: int) -> Tensor:
    """[B, L, H, D] -> [B*H, nBlocks, S, D], zero-padded to whole blocks (one copy)."""
    pad = num_blocks(x.shape[1], block_size) * block_size - x.shape[1]
    if pad:  # F.pad copies even when there is nothing to pad
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
    return rearrange(x, "b (n s) h d -> (b h) n s d", s=block_size).contiguous()


def block_sparse_attention_gather(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_index: Tensor,
    block_counts: Tensor,
    *,
    block_size: int,
    kv_valid_lengths: Tensor | None,
    scale: float,
) -> Tensor:
    """Block-sparse attention through gathered blocks and SDPA; inputs already validated.

    q [B, Lq, H, D], k/v [B, Lk, H, D], block_index [B, H, nQB, C], block_counts [B, H, nQB],
    kv_valid_lengths [B] or None -> [B, Lq, H, D] in q's dtype. Rows with no attended key are 0
    with zero gradients.
    """
    batch, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    width = block_index.shape[-1]
    q_blocks = _to_blocks(q, block_size)  # [BH, nQB, S, D]
    k_blocks = _to_blocks(k, block_size)  # [BH, nKB, S, D]
    v_blocks = _to_blocks(v, block_size)
    n_q_blocks, n_kv_blocks = q_blocks.shape[1], k_blocks.shape[1]
    padded_len = n_kv_blocks * block_size

    valid = kv_valid_lengths.long() if kv_valid_lengths is not None else None
    slot_used = torch.arange(width, device=q.device) < block_counts[..., None]  # [B, H, nQB, C]
    # One host sync decides whether any key needs hiding; the common VSA case (full top-K rows,
    # whole blocks) then runs SDPA without a mask.
    flags = [~slot_used.all()]
    if valid is not None:
        flags.append((valid < padded_len).any())
    needs_mask = bool(torch.stack(flags).any()) or padded_len != lk

    if needs_mask:
        limit = valid if valid is not None else torch.full((batch,), lk, device=q.device)
        # Keys at or past the valid length are zeroed, so non-finite padding cannot leak through
        # the (0 * value) products of masked keys.
        position_ok = torch.arange(padded_len, device=q.device) < limit[:, None]  # [B, nKB*S]
        position_ok = rearrange(position_ok, "b (n s) -> b 1 n s 1", s=block_size)
        shape = k_blocks.shape
        k_blocks = k_blocks.view(batch, heads, *shape[1:]).masked_fill(~position_ok, 0.0).view(shape)
        v_blocks = v_blocks.view(batch, heads, *shape[1:]).masked_fill(~position_ok, 0.0).view(shape)

    blocks = torch.where(slot_used, block_index.long(), 0)  # [B, H, nQB, C]
    # Row of each selected block in the flattened [B*H*nKB, S, D] key/value tensors.
    bh = torch.arange(batch * heads, device=q.device).view(batch, heads, 1, 1)
    rows = (bh * n_kv_blocks + blocks).flatten(0, 1)  # [BH, nQB, C]
    if needs_mask:
        key_pos = blocks[..., None] * block_size + torch.arange(block_size, device=q.device)
        key_ok = slot_used[..., None] & (key_pos < limit.view(batch, 1, 1, 1, 1))  # [B, H, nQB, C, S]
        key_ok = rearrange(key_ok, "b h n c s -> (b h) n 1 (c s)")
        # A query block with no attended key attends to everything instead (finite, no NaN) and
        # is zeroed afterwards: 0 output and 0 gradients, whatever SDPA does with all-False rows.
        any_ok = key_ok.any(-1, keepdim=True)  # [BH, nQB, 1, 1]
        key_ok = key_ok | ~any_ok

    k_rows, v_rows = k_blocks.flatten(0, 1), v_blocks.flatten(0, 1)
    per_query_block = width * block_size * head_dim
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * per_query_block))
    # Without autograd, one pair of gather buffers is reused by every chunk: fresh multi-MiB
    # allocations per chunk cost more in page faults than the copy itself (measured ~4x on CPU).
    reuse = not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
    if reuse:
        buffers = [k_rows.new_empty(batch * heads * chunk * width, block_size, head_dim) for _ in range(2)]
    outputs = []
    for start in range(0, n_q_blocks, chunk):
        stop = min(start + chunk, n_q_blocks)
        sel = rows[:, start:stop].reshape(-1)  # [BH * N * C]
        gathered = (batch * heads, stop - start, width * block_size, head_dim)
        if reuse:
            k_sel = torch.index_select(k_rows, 0, sel, out=buffers[0][: sel.numel()]).view(gathered)
            v_sel = torch.index_select(v_rows, 0, sel, out=buffers[1][: sel.numel()]).view(gathered)
        else:
            k_sel = k_rows.index_select(0, sel).view(gathered)  # [BH, N, C*S, D]
            v_sel = v_rows.index_select(0, sel).view(gathered)
        mask = key_ok[:, start:stop] if needs_mask else None
        out = torch.nn.functional.scaled_dot_product_attention(
            q_blocks[:, start:stop], k_sel, v_sel, attn_mask=mask, scale=scale
        )  # [BH, N, S, D]
        if needs_mask:
            out = out * any_ok[:, start:stop].to(out.dtype)
        outputs.append(out)
    out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
    out = rearrange(out, "(b h) n s d -> b (n s) h d", b=batch)
    return out[:, :lq]
