"""Top-K key-block selection from the coarse scores, and the fine stage's block index.

For every (sample, head, query block) VSA keeps the ``K`` video key blocks with the largest coarse
logits; ``K`` is given directly or from a sparsity ``s`` as ``ceil((1 - s) · nB)``. The choice is
discrete: the block index is an integer tensor, so no gradient flows through the choice; gradients
reach the selected keys through the fine attention and every key through the coarse output (tested
against the same computation with the index fixed up front).

Text keys (joint self-attention, paper eq. 3) are never dropped: their key blocks follow the video
blocks in the key sequence and are appended to every row as *forced* blocks. When the video length
is not a multiple of the block size, the last video block shares a key block with the first text
tokens, so it is forced too (and not counted in ``K``). See docs/refiner-vsa.md, "Text tokens".

Shape legend: B batch, H heads, nQ query blocks, nV video key blocks, nK all key blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skyreels_attention.block_sparse import blocks_to_keep

__all__ = ["keep_block_count", "select_key_blocks"]


def keep_block_count(num_blocks: int, *, sparsity: float | None = None, top_k: int | None = None) -> int:
    """``K``: ``top_k`` (clipped to ``num_blocks``) or ``ceil((1 - sparsity) · num_blocks)``, at least 1.

    Exactly one of ``sparsity`` (in [0, 1)) and ``top_k`` (>= 1) must be given.
    """
    if (sparsity is None) == (top_k is None):
        raise ValueError(
            f"give exactly one of sparsity and top_k, got sparsity={sparsity!r}, top_k={top_k!r}"
        )
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        return min(top_k, num_blocks)
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise ValueError(f"sparsity must be a float in [0, 1), got {sparsity!r}")
    return blocks_to_keep(float(sparsity), num_blocks)


def select_key_blocks(
    logits: Tensor, keep: int, *, num_video_tokens: int, num_key_tokens: int, block_size: int
) -> tuple[Tensor, Tensor]:
    """The fine stage's ``(block_index, block_counts)`` for video query blocks.

    Args:
        logits: ``[B, H, nQ, nV]`` coarse logits of video query blocks against video key blocks.
        keep: ``K``, video key blocks to keep per row (clipped to the selectable ones).
        num_video_tokens: ``N``; the key sequence is ``[video (N); text]``.
        num_key_tokens: ``N + Lt``, the key sequence length.
        block_size: tokens per block.

    Returns:
        ``block_index [B, H, nQ, K' + F]`` int32 (top-K' video blocks, then the F forced blocks) and
        ``block_counts [B, H, nQ]`` int32 (all ``K' + F``), where the forced blocks are every key
        block holding a text token and ``K' = min(K, nV - forced video blocks)``.
    """
    batch, heads, n_query, n_video = logits.shape
    n_keys = -(-num_key_tokens // block_size)
    # Key blocks from the one holding the first text token on are always attended.
    first_forced = num_video_tokens // block_size if num_key_tokens > num_video_tokens else n_keys
    selectable = min(first_forced, n_video)
    k = min(keep, selectable)
    forced = torch.arange(first_forced, n_keys, device=logits.device, dtype=torch.int64)
    parts = []
    if k > 0:
        # A discrete choice with no gradient (VSA). Integer indices carry none anyway; detaching
        # keeps autograd from recording the top-K.
        parts.append(logits.detach()[..., :selectable].topk(k, dim=-1, sorted=False).indices)
    if forced.numel():
        parts.append(forced.expand(batch, heads, n_query, forced.numel()))
    index = torch.cat(parts, dim=-1).to(torch.int32).contiguous()
    counts = torch.full((batch, heads, n_query), index.shape[-1], dtype=torch.int32, device=logits.device)
    return index, counts
