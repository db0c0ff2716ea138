"""Coarse pooling/attention and the top-K block selection, against explicit loops and full sorts."""

from __future__ import annotations

import math

import pytest
import torch

from skyreels_attention.block_sparse import block_sparse_attention
from skyreels_refiner_vsa import (
    SparsityRamp,
    coarse_attention,
    cube_tiling,
    keep_block_count,
    pool_blocks,
    select_key_blocks,
    video_sparse_attention,
)


def test_pool_blocks_divides_by_the_real_token_count():
    tiling = cube_tiling((5, 6, 7))  # 210 tokens: blocks of 64, 64, 64, 18
    x = torch.randn(2, 210, 3, 4, dtype=torch.float64)
    pooled = pool_blocks(tiling.tile(x), tiling)
    for block in range(tiling.num_blocks):
        members = (tiling.block_of_token == block).nonzero().flatten()
        torch.testing.assert_close(pooled[:, block], x[:, members].mean(dim=1))
    assert (tiling.block_of_token == 3).sum() == 18


def test_coarse_attention_is_softmax_over_block_means_broadcast_back():
    tiling = cube_tiling((4, 5, 9))
    q, k, v = (torch.randn(1, 180, 2, 8, dtype=torch.float64) for _ in range(3))
    result = coarse_attention(*(tiling.tile(x) for x in (q, k, v)), tiling, scale=0.3)
    means = [
        torch.stack([x[:, tiling.block_of_token == b].mean(1) for b in range(tiling.num_blocks)], 1)
        for x in (q, k, v)
    ]
    logits = torch.einsum("bqhd,bkhd->bhqk", means[0], means[1]) * 0.3
    torch.testing.assert_close(result.logits, logits)
    block_out = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), means[2])
    torch.testing.assert_close(tiling.untile(result.output), block_out[:, tiling.block_of_token])


@pytest.mark.parametrize(
    ("sparsity", "blocks", "expected"),
    [(0.0, 40, 40), (0.875, 40, 5), (0.9, 40, 4), (0.75, 7, 2), (0.99, 3, 1)],
)
def test_keep_block_count_from_sparsity(sparsity, blocks, expected):
    assert (
        keep_block_count(blocks, sparsity=sparsity)
        == expected
        == max(1, math.ceil(round((1 - sparsity) * blocks, 9)))
    )


def test_keep_block_count_from_top_k_and_errors():
    assert keep_block_count(10, top_k=3) == 3 and keep_block_count(2, top_k=3) == 2
    with pytest.raises(ValueError, match="give exactly one of sparsity and top_k"):
        keep_block_count(10, sparsity=0.5, top_k=2)
    with pytest.raises(ValueError, match="give exactly one of sparsity and top_k"):
        keep_block_count(10)
    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\)"):
        keep_block_count(10, sparsity=1.0)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        keep_block_count(10, top_k=0)


def test_top_k_selection_matches_a_full_sort_without_text():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 9, generator=gen)
    index, counts = select_key_blocks(
        logits, 4, num_video_tokens=9 * 64 - 10, num_key_tokens=9 * 64 - 10, block_size=64
    )
    assert index.dtype == torch.int32 and counts.eq(4).all()
    best = logits.argsort(dim=-1, descending=True)[..., :4]
    assert torch.equal(index.long().sort(-1).values, best.sort(-1).values)


def test_text_blocks_are_forced_and_the_shared_tail_block_is_not_counted():
    logits = torch.zeros(1, 1, 3, 3)
    logits[..., 2] = 10.0  # the tail video block would win the ranking ...
    logits[..., 0] = 5.0
    # 3 video blocks (the last has 40 tokens), then 100 text tokens: key blocks 2 (shared), 3, 4.
    index, counts = select_key_blocks(logits, 1, num_video_tokens=168, num_key_tokens=268, block_size=64)
    # ... but it is forced anyway, so the one counted pick is block 0.
    assert index.tolist() == [[[[0, 2, 3, 4]] * 3]] and counts.eq(4).all()
    # Video length a multiple of the block size: text starts a new block, the tail is selectable.
    index, _ = select_key_blocks(logits, 1, num_video_tokens=192, num_key_tokens=292, block_size=64)
    assert index[0, 0, 0].tolist() == [2, 3, 4]


def test_gradients_reach_q_and_k_through_coarse_and_fine_not_through_the_choice(make_inputs):
    """VSA's gradients equal those of the same computation with the block index fixed up front.

    The top-K choice is discrete: q and k get gradient through the coarse output (``gate ⊙ coarse``)
    and through the fine attention over the chosen blocks, never through which blocks were chosen
    (a straight-through or soft top-K would change these gradients).
    """
    grid, keep, num_text = (5, 6, 7), 2, 9
    x = make_inputs(grid, text=num_text)  # float64; the last sample's text is padded
    trainable = ["video_q", "video_k", "video_v", "gate", "text_k", "text_v"]
    for name in trainable:
        x[name].requires_grad_(True)
    tiling = cube_tiling(grid)
    scale = 1 / math.sqrt(x["video_q"].shape[-1])
    out = video_sparse_attention(**x, tiling=tiling, keep=keep, scale=scale)

    q, k, v = (tiling.tile(x[name]) for name in ("video_q", "video_k", "video_v"))
    with torch.no_grad():  # the choice, once, as a constant
        index, counts = select_key_blocks(
            coarse_attention(q, k, v, tiling, scale).logits,
            keep,
            num_video_tokens=tiling.num_tokens,
            num_key_tokens=tiling.num_tokens + num_text,
            block_size=tiling.block_size,
        )
    num_key_blocks = math.ceil((tiling.num_tokens + num_text) / tiling.block_size)
    assert int(counts.max()) < num_key_blocks  # blocks are really dropped (3 of 4 attended)
    fine = block_sparse_attention(
        q,
        torch.cat([k, x["text_k"]], dim=1),
        torch.cat([v, x["text_v"]], dim=1),
        index,
        counts,
        block_size=tiling.block_size,
        kv_valid_lengths=x["text_valid_lengths"] + tiling.num_tokens,
        scale=scale,
    )
    fixed = tiling.untile(fine + tiling.tile(x["gate"]) * coarse_attention(q, k, v, tiling, scale).output)
    torch.testing.assert_close(out.video, fixed, rtol=0, atol=1e-12)

    weights = torch.randn(out.video.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves = [x[name] for name in trainable]
    got = torch.autograd.grad((out.video * weights).sum(), leaves)
    want = torch.autograd.grad((fixed * weights).sum(), leaves)
    for name, g, w in zip(trainable, got, want, strict=True):
        assert g.abs().max() > 0, name
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)


def test_sparsity_ramp():
    ramp = SparsityRamp(target=0.9, steps=100, start=10)
    assert [ramp(s) for s in (0, 10, 60, 110, 500)] == pytest.approx([0.0, 0.0, 0.45, 0.9, 0.9])
    assert SparsityRamp(target=0.5, steps=0)(0) == 0.5
    with pytest.raises(ValueError, match=r"target must be a sparsity in \[0, 1\)"):
        SparsityRamp(target=1.0, steps=10)
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        SparsityRamp(target=0.5, steps=-1)
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        ramp(-1)
