"""Dual-/single-stream blocks against diffusers' HunyuanVideo blocks; text cross-attention (eq. 4)."""

from __future__ import annotations

import pytest
import torch

from skyreels_attention import KeyPaddingMask
from skyreels_av_rope import video_grid_positions
from skyreels_mmdit_blocks import BlockContext, DualStreamBlock, Rotary, SingleStreamBlock, TextCrossAttention
from skyreels_mmdit_blocks.reference import reference_text_cross_attention

GRID = (2, 3, 5)  # post-patch (t, h, w): L = 30 latent tokens
LENGTHS = torch.tensor([9, 4])


def _inputs(branch, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(2, 30, 32, generator=g)
    text = torch.randn(2, 9, 32, generator=g)
    conditioning = torch.randn(2, 32, generator=g)
    ctx = BlockContext(
        conditioning=conditioning,
        rotary=Rotary(*branch.rope(video_grid_positions(*GRID))),
        joint_mask=KeyPaddingMask(valid_lengths=LENGTHS + 30),
        text_context=text,
        text_mask=KeyPaddingMask(valid_lengths=LENGTHS),
    )
    return latent, text, ctx


def _diffusers_args(model, latent, text, ctx):
    freqs = model.rope(torch.zeros(1, 4, GRID[0], 2 * GRID[1], 2 * GRID[2]))
    keys = torch.arange(39)[None, :] < (LENGTHS + 30)[:, None]
    return latent, text, ctx.conditioning, keys[:, None, None, :], freqs


@pytest.mark.parametrize("kind", ["dual", "single"])
def test_block_matches_diffusers_forward_and_backward(hunyuan_model, our_branch, kind):
    theirs = (
        hunyuan_model.transformer_blocks if kind == "dual" else hunyuan_model.single_transformer_blocks
    )[1]
    ours = (our_branch.dual_blocks if kind == "dual" else our_branch.single_blocks)[1]
    latent, text, ctx = _inputs(our_branch)
    lat_a, txt_a = latent.clone().requires_grad_(True), text.clone().requires_grad_(True)
    lat_b, txt_b = latent.clone().requires_grad_(True), text.clone().requires_grad_(True)
    out_a = theirs(*_diffusers_args(hunyuan_model, lat_a, txt_a, ctx))
    out_b = ours(lat_b, txt_b, ctx)
    assert (out_a[0] - out_b[0]).abs().max().item() <= 1e-5
    # Padded text rows are free to differ; the real ones match.
    for b, n in enumerate(LENGTHS.tolist()):
        assert (out_a[1][b, :n] - out_b[1][b, :n]).abs().max().item() <= 1e-5
    w = torch.randn(out_a[0].shape, generator=torch.Generator().manual_seed(5))
    (out_a[0] * w).sum().backward()
    (out_b[0] * w).sum().backward()
    assert (lat_a.grad - lat_b.grad).abs().max().item() <= 1e-5
    assert lat_a.grad.abs().max() > 1e-3
    hunyuan_model.zero_grad()


def test_two_stages_equal_forward(our_branch):
    latent, text, ctx = _inputs(our_branch, seed=1)
    for block in our_branch.blocks:
        expected = block(latent, text, ctx)
        got = block.feed_forward_stage(block.attention_stage(latent, text, ctx))
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_text_cross_attention_is_exactly_zero_at_init():
    layer = TextCrossAttention(dim=32, num_heads=2)
    latent, text = torch.randn(2, 30, 32), torch.randn(2, 9, 32)
    assert torch.equal(layer(latent, text, text_mask=KeyPaddingMask(valid_lengths=LENGTHS)), latent)


def test_text_cross_attention_matches_reference(randomize):
    layer = randomize(TextCrossAttention(dim=32, num_heads=2), seed=3, std=0.3)
    latent, text = torch.randn(2, 30, 32), torch.randn(2, 9, 32)
    got = layer(latent, text, text_mask=KeyPaddingMask(valid_lengths=LENGTHS))
    expected = reference_text_cross_attention(layer, latent, text, LENGTHS)
    assert (got.double() - expected).abs().max().item() <= 1e-5
    assert (got - latent).abs().max() > 1e-2  # the layer does something once trained
    unmasked = reference_text_cross_attention(layer, latent, text, None)
    assert (unmasked - expected).abs().max() > 1e-3  # and the mask matters


@pytest.mark.parametrize("block_class", [DualStreamBlock, SingleStreamBlock])
def test_text_cross_attention_sits_after_self_attention(block_class, randomize, our_branch):
    """attention_stage = self-attention, then eq. 4 on its output (before any MLP)."""
    block = randomize(block_class(dim=32, num_heads=2, text_cross_attention=True), seed=4, std=0.2)
    latent, text, ctx = _inputs(our_branch, seed=2)
    with torch.no_grad():
        state = block.attention_stage(latent, text, ctx)
        layer, block.text_cross_attention = block.text_cross_attention, None
        plain = block.attention_stage(latent, text, ctx)
    expected = reference_text_cross_attention(layer, plain.latent, ctx.text_context, LENGTHS)
    assert (state.latent.double() - expected).abs().max().item() <= 1e-5
    assert torch.equal(state.text, plain.text)


def test_block_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DualStreamBlock(dim=30, num_heads=4)
