"""The coarse stage of VSA: attention between mean-pooled blocks (cubes), broadcast back to tokens.

Each block's query, key and value is the mean over its *real* tokens (the last block may hold fewer
than ``block_size``). Coarse attention is a dense softmax over blocks; its logits also rank the key
blocks for the fine stage (``selection.py``). Its cost is ``(N / 64)^2`` dot products, ~1/4096 of
dense attention.

Shape legend: B batch, N grid tokens, H heads, D head dim, nB blocks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from skyreels_attention import autocast_off
from skyreels_refiner_vsa.tiling import CubeTiling

__all__ = ["CoarseAttention", "coarse_attention", "pool_blocks", "stage_dtype"]


def stage_dtype(dtype: torch.dtype) -> torch.dtype:
    """The coarse stage computes in float32 (float64 for float64 inputs)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pool_blocks(x_tiled: Tensor, tiling: CubeTiling) -> Tensor:
    """Mean over each block's real tokens: tiled ``[B, N, H, D] -> [B, nB, H, D]`` in ``stage_dtype``."""
    dtype = stage_dtype(x_tiled.dtype)
    blocks = tiling.pad_to_blocks(x_tiled.to(dtype))  # [B, nB, S, H, D], zero padding at the end
    return blocks.sum(dim=2) / tiling.tokens_per_block.to(dtype).view(1, -1, 1, 1)


class CoarseAttention(NamedTuple):
    """output: tiled ``[B, N, H, D]`` (``stage_dtype``), each token carrying its block's coarse output.
    logits: ``[B, H, nB, nB]`` (``stage_dtype``) query-block x key-block scores (scaled, before softmax)."""

    output: Tensor
    logits: Tensor


def coarse_attention(
    q_tiled: Tensor, k_tiled: Tensor, v_tiled: Tensor, tiling: CubeTiling, scale: float
) -> CoarseAttention:
    """Softmax attention over pooled blocks, in ``stage_dtype``, broadcast to the blocks' tokens.

    Runs with autocast disabled (``skyreels_attention.autocast_off``): float32 logits and output also under
    ``torch.autocast(bf16)``.

    Args:
        q_tiled, k_tiled, v_tiled: ``[B, N, H, D]`` in tiled order.
        tiling: the grid's tiling.
        scale: softmax scale (the fine stage's, 1/sqrt(D) by default).
    """
    # bf16 rounding of the logits would change which blocks win the top-K.
    with autocast_off(q_tiled.device):
        pooled_q, pooled_k, pooled_v = (pool_blocks(x, tiling) for x in (q_tiled, k_tiled, v_tiled))
        logits = torch.einsum("bqhd,bkhd->bhqk", pooled_q, pooled_k) * scale
        block_out = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(dim=-1), pooled_v)  # [B, nB, H, D]
    # Every token of block i carries block i's output: a broadcast along a new token axis.
    batch, n_blocks, heads, dim = block_out.shape
    per_token = block_out.unsqueeze(2).expand(batch, n_blocks, tiling.block_size, heads, dim)
    return CoarseAttention(per_token.reshape(batch, -1, heads, dim)[:, : tiling.num_tokens], logits)
