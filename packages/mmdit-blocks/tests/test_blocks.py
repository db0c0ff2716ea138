"""Dual-/single-stream blocks against diffusers' HunyuanVideo blocks; text cross-attention (eq. 4);
per-head RMSNorm dtypes; RoPE table length checks."""

from __future__ import annotations

import pytest
import torch

from skyreels_attention import KeyPaddingMask
from skyreels_av_rope import video_grid_positions
from skyreels_mmdit_blocks import (
    BlockContext,
    DualStreamBlock,
    HeadRMSNorm,
    Rotary,
    SingleStreamBlock,
    TextCrossAttention,
)
from skyreels_mmdit_blocks.reference import reference_text_cross_attention
from skyreels_mmdit_blocks.rotary import rotate_prefix

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


def test_a_zero_text_cross_attention_is_skipped_only_inside_the_block_and_without_autograd(monkeypatch):
    from skyreels_mmdit_blocks import skipping_zero_text_cross_attention

    layer = TextCrossAttention(dim=32, num_heads=2)
    model = torch.nn.ModuleDict({"a": layer})
    latent, text = torch.randn(2, 30, 32), torch.randn(2, 9, 32)
    calls = []
    monkeypatch.setattr(layer.q, "forward", lambda x: calls.append(1) or torch.zeros_like(x))
    with torch.no_grad():
        layer(latent, text, text_mask=None)  # outside the block: always computed
    assert calls == [1]
    with skipping_zero_text_cross_attention(model):
        with torch.no_grad():
            assert layer(latent, text, text_mask=None) is latent  # identity: not computed
        with torch.inference_mode():
            assert layer(latent, text, text_mask=None) is latent
        assert calls == [1]
        # With autograd on it runs: Out's gradient needs the attention output even while Out is zero.
        layer(latent, text, text_mask=None)
        assert calls == [1, 1]
    assert layer.skip_while_zero is False  # restored on exit
    monkeypatch.undo()
    layer(latent, text, text_mask=None).sum().backward()
    assert layer.out.weight.grad.abs().max() > 0
    # One non-zero entry of Out: no longer the identity, so it runs inside the block too.
    with torch.no_grad():
        layer.out.bias[3] = 0.5
    with skipping_zero_text_cross_attention(model), torch.no_grad():
        assert layer.skip_while_zero is False
        assert torch.equal(layer(latent, text, text_mask=None)[..., 3], latent[..., 3] + 0.5)


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


@pytest.mark.parametrize("autocast", [False, True])
def test_head_rms_norm_returns_the_input_dtype(autocast):
    """Statistics and the fp32 gain in fp32, then one cast: a bf16 q/k stays bf16 (like v), also
    under autocast, where the gain is still a float32 parameter."""
    norm = HeadRMSNorm(16)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 16))
    x = torch.randn(2, 3, 2, 16, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = norm(x)
    x64 = x.double()
    expected = x64 / torch.sqrt(x64.square().mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    assert got.dtype == torch.bfloat16
    # One rounding to bf16 at the end: within half a bf16 ulp (<= 2^-8 relative) plus fp32 noise.
    assert ((got.double() - expected).abs() <= 2.0**-8 * expected.abs() + 1e-6).all()
    full = norm(x.float())  # fp32 in, fp32 out, same numbers to fp32 precision
    assert full.dtype == torch.float32 and (full.double() - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("block_class", [DualStreamBlock, SingleStreamBlock])
def test_block_rejects_a_rope_table_of_the_wrong_length(block_class, our_branch):
    block = block_class(dim=32, num_heads=2)
    latent, text, ctx = _inputs(our_branch)  # 30 latent tokens
    for rows in (28, 31):
        positions = video_grid_positions(*GRID)
        positions = torch.cat([positions, positions[:1]]) if rows == 31 else positions[:rows]
        bad = BlockContext(
            conditioning=ctx.conditioning,
            rotary=Rotary(*our_branch.rope(positions)),
            joint_mask=ctx.joint_mask,
            text_context=ctx.text_context,
            text_mask=ctx.text_mask,
        )
        with pytest.raises(
            ValueError, match=rf"ctx\.rotary must have one row per latent token: expected 30 rows, got {rows}"
        ):
            block(latent, text, bad)


def test_rotate_prefix_checks_the_latent_count():
    x = torch.randn(1, 7, 2, 16)
    cos, sin = torch.rand(5, 8), torch.rand(5, 8)
    out = rotate_prefix(x, Rotary(cos, sin), num_latent=5)
    assert torch.equal(out[:, 5:], x[:, 5:]) and not torch.equal(out[:, :5], x[:, :5])
    with pytest.raises(ValueError, match="rotary must have one row per latent token: expected 6 rows, got 5"):
        rotate_prefix(x, Rotary(cos, sin), num_latent=6)
    with pytest.raises(ValueError, match=r"num_latent must be an int in \[0, 7\]; got 8"):
        rotate_prefix(x, Rotary(cos, sin), num_latent=8)


def test_only_a_plain_all_zero_linear_counts_as_zero():
    from skyreels_mmdit_blocks import is_zero_linear

    class MyLinear(torch.nn.Linear):
        pass

    zero = torch.nn.Linear(4, 3)
    torch.nn.init.zeros_(zero.weight), torch.nn.init.zeros_(zero.bias)
    assert is_zero_linear(zero)
    no_bias = torch.nn.Linear(4, 3, bias=False)
    torch.nn.init.zeros_(no_bias.weight)
    assert is_zero_linear(no_bias)
    with torch.no_grad():
        zero.bias[1] = 1e-30
    assert not is_zero_linear(zero)
    subclass = MyLinear(4, 3)
    torch.nn.init.zeros_(subclass.weight), torch.nn.init.zeros_(subclass.bias)
    assert not is_zero_linear(subclass) and not is_zero_linear(torch.nn.Identity())


def test_a_lora_on_a_zero_text_cross_attention_output_is_not_skipped():
    """peft wraps ``out``: the base is zero but ``B A x`` is not, so sampling must run the layer."""
    from skyreels_mmdit_blocks import skipping_zero_text_cross_attention

    peft = pytest.importorskip("peft")
    layer = TextCrossAttention(dim=32, num_heads=2)
    config = peft.LoraConfig(r=2, target_modules=["out"], init_lora_weights=False)
    wrapped = peft.get_peft_model(torch.nn.ModuleDict({"layer": layer}), config).base_model.model["layer"]
    latent, text = torch.randn(2, 30, 32), torch.randn(2, 9, 32)
    with skipping_zero_text_cross_attention(wrapped), torch.no_grad():
        assert wrapped.skip_while_zero is False
        assert (wrapped(latent, text, text_mask=None) - latent).abs().max() > 1e-4
