"""One dual-stream and one single-stream block, forward + backward, ours vs diffusers (CPU, fp32).

Run: python -m pytest benchmarks/test_mmdit_blocks.py --benchmark-only -q
Baseline per group: diffusers' HunyuanVideoTransformerBlock / HunyuanVideoSingleTransformerBlock with
the same weights (copied through our HunyuanVideo importer) and the same inputs: 1024 video tokens
(grid 4 x 16 x 16) + 64 text tokens of which 48 are real, D 384 (3 heads of 128), RoPE (16, 56, 56).
torch runs single-threaded: on a shared 2-core machine two OpenMP threads make timings erratic.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel

from skyreels_attention import KeyPaddingMask
from skyreels_av_rope import video_grid_positions
from skyreels_mmdit_blocks import (
    BlockContext,
    MMDiTBranch,
    Rotary,
    infer_hunyuan_branch_config,
    load_hunyuan_video_weights,
)

HEADS, HEAD_DIM, GRID, TEXT, REAL_TEXT = 3, 128, (4, 16, 16), 64, 48
DIM, LATENT = HEADS * HEAD_DIM, GRID[0] * GRID[1] * GRID[2]
SHAPE = f"video [1, {LATENT}, {DIM}] + text [1, {TEXT}, {DIM}] ({REAL_TEXT} real), {HEADS} heads x {HEAD_DIM}"
ROUNDS = 5


pytestmark = pytest.mark.usefixtures("single_thread")  # benchmarks/conftest.py


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    theirs = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        text_embed_dim=32,
        pooled_projection_dim=32,
    )
    config = infer_hunyuan_branch_config(theirs.state_dict(), config_json=dict(theirs.config))
    ours = MMDiTBranch(config)
    load_hunyuan_video_weights(ours, theirs.state_dict())
    return theirs, ours


@pytest.fixture(scope="module")
def inputs(models):
    theirs, ours = models
    g = torch.Generator().manual_seed(1)
    latent, text = torch.randn(1, LATENT, DIM, generator=g), torch.randn(1, TEXT, DIM, generator=g)
    conditioning = torch.randn(1, DIM, generator=g)
    lengths = torch.tensor([REAL_TEXT])
    ctx = BlockContext(
        conditioning=conditioning,
        rotary=Rotary(*ours.rope(video_grid_positions(*GRID))),
        joint_mask=KeyPaddingMask(valid_lengths=lengths + LATENT),
        text_context=text,
        text_mask=KeyPaddingMask(valid_lengths=lengths),
    )
    freqs = theirs.rope(torch.zeros(1, 4, GRID[0], 2 * GRID[1], 2 * GRID[2]))
    keys = (torch.arange(LATENT + TEXT) < LATENT + REAL_TEXT)[None, None, None, :]
    return latent, text, ctx, (conditioning, keys, freqs)


def _step(block, latent, text, call):
    latent = latent.detach().requires_grad_(True)
    text = text.detach().requires_grad_(True)
    out_latent, out_text = call(block, latent, text)
    (out_latent.square().mean() + out_text[:, :REAL_TEXT].square().mean()).backward()
    block.zero_grad(set_to_none=True)
    return out_latent.detach()


def _ours(block, latent, text, ctx):
    return block(latent, text, ctx)


def _diffusers(block, latent, text, args):
    conditioning, keys, freqs = args
    return block(latent, text, conditioning, keys, freqs)


@pytest.mark.parametrize("kind", ["dual", "single"])
@pytest.mark.parametrize("impl", ["diffusers", "skyreels"])
def test_block_forward_backward(benchmark, models, inputs, kind, impl):
    theirs, ours = models
    latent, text, ctx, diffusers_args = inputs
    their_block = (theirs.transformer_blocks if kind == "dual" else theirs.single_transformer_blocks)[0]
    our_block = (ours.dual_blocks if kind == "dual" else ours.single_blocks)[0]
    # Same weights, same inputs: the two implementations compute the same thing.
    with torch.no_grad():
        diff = (
            _ours(our_block, latent, text, ctx)[0] - _diffusers(their_block, latent, text, diffusers_args)[0]
        )
    assert diff.abs().max().item() <= 1e-4

    if impl == "diffusers":
        fn = lambda: _step(their_block, latent, text, lambda b, x, t: _diffusers(b, x, t, diffusers_args))  # noqa: E731
    else:
        fn = lambda: _step(our_block, latent, text, lambda b, x, t: _ours(b, x, t, ctx))  # noqa: E731
    block_name = "dual-stream" if kind == "dual" else "single-stream"
    benchmark.group = f"{block_name} block fwd+bwd, {SHAPE}"
    benchmark.extra_info.update(
        impl=f"{impl} {block_name} block",
        baseline=impl == "diffusers",
        shape=SHAPE,
        dtype="float32",
        device="cpu",
    )
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
