"""Plain dense reference of VSA: every stage written as masked dense math on the grid order.

It shares only the tiling's block membership (``CubeTiling.block_of_token``) with the implementation:
pooling is a membership matmul, the selection a full sort, the fine stage a dense softmax over a
token-level mask ``[B, H, N, N + Lt]``. It computes in float32 (float64 for float64 inputs) and
materialises ``N x (N + Lt)`` scores, so it is for tests on small grids only.

Shape legend: B batch, N grid tokens, Lt text tokens, H heads, D head dim, nB blocks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from skyreels_refiner_vsa.sparse_attention import VSAOutput, check_vsa_inputs
from skyreels_refiner_vsa.tiling import CubeTiling

__all__ = ["selected_block_table", "video_sparse_attention_reference", "vsa_token_mask"]


def selected_block_table(
    logits: Tensor, keep: int, *, num_video_tokens: int, has_text: bool, block_size: int
) -> Tensor:
    """``[B, H, nB, nB]`` bool: which video key blocks each video query block attends to.

    The rule of docs/refiner-vsa.md: with text present and ``N % block_size != 0`` the last video
    block shares a key block with the text, so it is always attended and not counted in ``K``;
    otherwise the ``K`` blocks with the largest logits (ranked by a full descending sort).
    """
    n_blocks = logits.shape[-1]
    tail_forced = has_text and num_video_tokens % block_size != 0
    selectable = n_blocks - 1 if tail_forced else n_blocks
    ranks = torch.argsort(torch.argsort(logits[..., :selectable], dim=-1, descending=True), dim=-1)
    table = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    table[..., :selectable] = ranks < keep
    if tail_forced:
        table[..., -1] = True
    return table


def vsa_token_mask(
    table: Tensor, tiling: CubeTiling, num_text: int, text_valid_lengths: Tensor | None
) -> Tensor:
    """Block table ``[B, H, nB, nB]`` -> video queries' token mask ``[B, H, N, N + Lt]`` (True = attend)."""
    blocks = tiling.block_of_token
    video = table[:, :, blocks][:, :, :, blocks]  # [B, H, N, N]
    batch, heads, n, _ = video.shape
    text = torch.ones(batch, heads, n, num_text, dtype=torch.bool, device=table.device)
    if text_valid_lengths is not None:
        real = torch.arange(num_text, device=table.device) < text_valid_lengths.view(batch, 1, 1, 1)
        text = text & real
    return torch.cat([video, text], dim=-1)


def _masked_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """q [B, Lq, H, D], k/v [B, Lk, H, D], mask [B, H, Lq, Lk] -> [B, Lq, H, D]; empty rows give 0."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhd->bqhd", weights, v)


def video_sparse_attention_reference(
    video_q: Tensor,
    video_k: Tensor,
    video_v: Tensor,
    *,
    tiling: CubeTiling,
    keep: int,
    gate: Tensor | None = None,
    text_q: Tensor | None = None,
    text_k: Tensor | None = None,
    text_v: Tensor | None = None,
    text_valid_lengths: Tensor | None = None,
    scale: float | None = None,
) -> VSAOutput:
    """Same contract as ``video_sparse_attention`` (no backend arguments), computed densely."""
    text = None if text_q is None and text_k is None and text_v is None else (text_q, text_k, text_v)
    check_vsa_inputs(video_q, video_k, video_v, tiling, text, text_valid_lengths, gate)
    dtype = torch.float64 if video_q.dtype == torch.float64 else torch.float32
    scale = 1.0 / math.sqrt(video_q.shape[-1]) if scale is None else float(scale)
    q, k, v = (x.to(dtype) for x in (video_q, video_k, video_v))
    blocks = tiling.block_of_token.to(q.device)

    # Coarse: membership-matrix means, dense softmax over blocks, broadcast by block membership.
    membership = torch.nn.functional.one_hot(blocks, tiling.num_blocks).to(dtype).T  # [nB, N]
    means = [
        torch.einsum("kn,bnhd->bkhd", membership, x) / membership.sum(1).view(1, -1, 1, 1) for x in (q, k, v)
    ]
    logits = torch.einsum("bqhd,bkhd->bhqk", means[0], means[1]) * scale
    coarse_blocks = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), means[2])
    coarse = coarse_blocks[:, blocks]  # [B, N, H, D]

    # Fine: dense attention under the token-level selection mask.
    num_text = 0 if text is None else text[0].shape[1]
    table = selected_block_table(
        logits,
        keep,
        num_video_tokens=tiling.num_tokens,
        has_text=text is not None,
        block_size=tiling.block_size,
    )
    mask = vsa_token_mask(table, tiling, num_text, text_valid_lengths)
    keys, values = k, v
    if text is not None:
        keys = torch.cat([k, text[1].to(dtype)], dim=1)
        values = torch.cat([v, text[2].to(dtype)], dim=1)
    video_out = _masked_softmax_attention(q, keys, values, mask, scale)
    if gate is not None:
        video_out = video_out + gate.to(dtype) * coarse

    text_out = None
    if text is not None:
        batch, heads = q.shape[0], q.shape[2]
        text_mask = torch.ones(batch, heads, num_text, keys.shape[1], dtype=torch.bool, device=q.device)
        text_mask[..., tiling.num_tokens :] = mask[:, :, :1, tiling.num_tokens :]
        text_out = _masked_softmax_attention(text[0].to(dtype), keys, values, text_mask, scale).to(
            video_q.dtype
        )
    return VSAOutput(video_out.to(video_q.dtype), text_out)
