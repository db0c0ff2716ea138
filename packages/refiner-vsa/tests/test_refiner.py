"""The refiner: initialisation from a base branch, its conditioning channels, and its errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from skyreels_attention import DenseMask, KeyPaddingMask
from skyreels_mmdit_blocks import BlockContext
from skyreels_refiner_vsa import (
    GridLayout,
    UpsampleMode,
    VideoRefiner,
    VideoRefinerConfig,
    VideoSparseAttention,
    VSAConfig,
    build_refiner_condition,
    interpolated_num_frames,
    refiner_config_from_base,
    refiner_from_base,
    upsample_latents,
    vsa_joint_attention,
)


def _branch_inputs(config, *, batch=2, grid=(5, 10, 14), text=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    c = config.out_channels
    text_mask = torch.ones(batch, text)
    text_mask[-1, text // 2 :] = 0
    return {
        "vim": torch.randn(batch, 2 * c + 1, *grid, generator=gen),
        "u": torch.randn(batch, c, *grid, generator=gen),
        "reference": torch.randn(batch, 3 * c + 1, 1, *grid[1:], generator=gen),
        "kwargs": {
            "timestep": torch.tensor([300.0, 700.0][:batch]),
            "text_tokens": torch.randn(batch, text, config.text_dim, generator=gen),
            "text_mask": text_mask,
        },
    }


def test_refiner_at_sparsity_zero_equals_the_base_branch(tiny_base):
    refiner = refiner_from_base(tiny_base, vsa=VSAConfig(sparsity=0.0)).eval()
    x = _branch_inputs(tiny_base.config)
    with torch.no_grad():
        base = tiny_base(x["vim"], **x["kwargs"])
        # Any values in the new U channels: their patch-embedding weights start at zero.
        refined = refiner(torch.cat([x["vim"], x["u"]], 1), **x["kwargs"])
        torch.testing.assert_close(refined, base, rtol=1e-5, atol=1e-5)
        # In-context references are dense tokens of the joint attention; still equal.
        reference = x["reference"]
        base_ref = tiny_base(x["vim"], reference_latents=reference[:, :9], **x["kwargs"])
        refined_ref = refiner(torch.cat([x["vim"], x["u"]], 1), reference_latents=reference, **x["kwargs"])
        torch.testing.assert_close(refined_ref, base_ref, rtol=1e-5, atol=1e-5)
        # Masked reference keys (a dense key mask): reordered behind the valid keys, still equal.
        key_mask = torch.ones(2, 35 + 175, dtype=torch.bool)
        key_mask[0, 3:20] = False
        base_masked = tiny_base(
            x["vim"], reference_latents=reference[:, :9], latent_key_mask=key_mask, **x["kwargs"]
        )
        refined_masked = refiner(
            torch.cat([x["vim"], x["u"]], 1),
            reference_latents=reference,
            latent_key_mask=key_mask,
            **x["kwargs"],
        )
        torch.testing.assert_close(refined_masked, base_masked, rtol=1e-5, atol=1e-5)
        assert (base_masked - base_ref).abs().max() > 1e-4
        key_mask[1, 40] = False  # a grid key
        with pytest.raises(ValueError, match="the joint mask masks grid keys"):
            refiner(
                torch.cat([x["vim"], x["u"]], 1),
                reference_latents=reference,
                latent_key_mask=key_mask,
                **x["kwargs"],
            )
        # Sparsity, the gates and the U weights each change the result once they act.
        refiner.set_sparsity(0.75)
        assert (refiner(torch.cat([x["vim"], x["u"]], 1), **x["kwargs"]) - base).abs().max() > 1e-3
        refiner.set_sparsity(0.0)
        refiner.vsa[0].gate.bias.fill_(0.5)
        assert (refiner(torch.cat([x["vim"], x["u"]], 1), **x["kwargs"]) - base).abs().max() > 1e-3
        refiner.vsa[0].gate.bias.zero_()
        refiner.branch.patch_embed.proj.weight[:, 9:].normal_()
        assert (refiner(torch.cat([x["vim"], x["u"]], 1), **x["kwargs"]) - base).abs().max() > 1e-3


def test_refiner_from_base_copies_weights_and_zeroes_the_new_ones(tiny_base):
    refiner = refiner_from_base(tiny_base, vsa=VSAConfig())
    base_state, state = tiny_base.state_dict(), refiner.branch.state_dict()
    assert set(base_state) == set(state)
    for name, value in base_state.items():
        if name == "patch_embed.proj.weight":
            assert torch.equal(state[name][:, :9], value) and torch.count_nonzero(state[name][:, 9:]) == 0
        else:
            assert torch.equal(state[name], value), name
    assert refiner.config.branch.in_channels == 13 and len(refiner.vsa) == 4
    assert all(
        torch.count_nonzero(v.gate.weight) == torch.count_nonzero(v.gate.bias) == 0 for v in refiner.vsa
    )


def test_every_parameter_gets_a_gradient_when_sparse(tiny_base, block_selections):
    refiner = refiner_from_base(tiny_base, vsa=VSAConfig(sparsity=0.5))
    # Latents (4, 16, 16), patch (1, 2, 2) -> token grid (4, 8, 8) = 4 full blocks; K = 2.
    x = _branch_inputs(tiny_base.config, batch=1, grid=(4, 16, 16), text=4)
    out = refiner(torch.cat([x["vim"], x["u"]], 1), **x["kwargs"])
    out.square().mean().backward()
    missing = [n for n, p in refiner.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert len(block_selections) == len(refiner.vsa)  # every block's VSA ran sparse:
    assert all(blocks == 4 and attended.eq(2).all() for attended, blocks in block_selections)


def test_each_block_runs_vsa_as_its_own_attention_stage_and_copies_keep_theirs(tiny_base, block_selections):
    # The VSA stage is the block's own ``attention_stage`` (what FSDP2 and sequence parallelism wrap);
    # a deep copy's blocks run the copy's VSA gates, not the original's.
    import copy

    refiner = refiner_from_base(tiny_base, vsa=VSAConfig(sparsity=0.5))
    x = _branch_inputs(tiny_base.config, batch=1, grid=(2, 16, 16), text=4)
    inp = torch.cat([x["vim"], x["u"]], 1)
    with pytest.raises(RuntimeError, match="outside their model's forward"):
        refiner.branch.blocks[0].attention_stage(None, None, None)
    with torch.no_grad():
        before = refiner(inp, **x["kwargs"])
        assert len(block_selections) == len(refiner.vsa)  # every block's attention stage ran VSA
        twin = copy.deepcopy(refiner)
        for vsa in twin.vsa:
            vsa.gate.bias.fill_(1.0)  # open the copy's gates: its output moves, the original's not
        moved = twin(inp, **x["kwargs"])
        assert torch.equal(refiner(inp, **x["kwargs"]), before)
        assert (moved - before).abs().max() > 1e-3
        assert twin.branch.blocks[0].attention_stage.args[:2] == (twin.branch.blocks[0], twin.vsa[0])


def test_activation_checkpointing_gives_the_same_gradients(tiny_base, block_selections):
    refiner = refiner_from_base(tiny_base, vsa=VSAConfig(sparsity=0.5))
    # Token grid (2, 8, 8) = 2 blocks, K = 1: the recomputation must choose the same blocks.
    x = _branch_inputs(tiny_base.config, batch=1, grid=(2, 16, 16), text=4)
    inp = torch.cat([x["vim"], x["u"]], 1)
    grads = []
    for enabled in (False, True):
        refiner.zero_grad()
        refiner.set_activation_checkpointing(enabled)
        refiner(inp, **x["kwargs"]).square().mean().backward()
        grads.append(refiner.vsa[1].gate.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0])
    # 4 blocks without checkpointing, 4 + 4 recomputed with it; each attends 1 of 2 video blocks.
    assert len(block_selections) == 12
    assert all(blocks == 2 and attended.eq(1).all() for attended, blocks in block_selections)


def test_refiner_config_errors(tiny_video_config):
    with pytest.raises(ValueError, match=r"branch.in_channels must be 3·C \+ 1 = 13"):
        VideoRefinerConfig(branch=tiny_video_config, vsa=VSAConfig())
    with pytest.raises(ValueError, match=r"base.in_channels must be 2·C \+ 1 = 9"):
        refiner_config_from_base(replace(tiny_video_config, in_channels=4), vsa=VSAConfig())
    with pytest.raises(TypeError, match="config must be a VideoRefinerConfig"):
        VideoRefiner(tiny_video_config)
    with pytest.raises(TypeError, match="base must be an MMDiTBranch"):
        refiner_from_base(torch.nn.Linear(2, 2), vsa=VSAConfig())


# --- conditioning ---------------------------------------------------------------------------------


def test_frame_interpolation_count():
    assert interpolated_num_frames(21, 2) == 41 and interpolated_num_frames(61, 2) == 121
    with pytest.raises(ValueError, match="factor must be a positive int"):
        interpolated_num_frames(21, 0)


def test_linear_upsampling_matches_torch_interpolate():
    low = torch.randn(2, 4, 5, 6, 7, dtype=torch.float64)
    size = (interpolated_num_frames(5, 2), 12, 14)
    up = upsample_latents(low, size)
    # Time: linear with end frames aligned (even frames are the low-res frames); space: pixel centres.
    in_time = F.interpolate(low, size=(size[0], 6, 7), mode="trilinear", align_corners=True)
    expected = F.interpolate(in_time, size=size, mode="trilinear", align_corners=False)
    torch.testing.assert_close(up, expected)
    same_space = upsample_latents(low, (9, 6, 7))
    torch.testing.assert_close(same_space[:, :, ::2], low)
    torch.testing.assert_close(same_space[:, :, 1::2], (low[:, :, :-1] + low[:, :, 1:]) / 2)


def test_nearest_upsampling():
    low = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)
    up = upsample_latents(low, (5, 4, 4), mode=UpsampleMode.NEAREST)
    assert up[0, 0, :, 0, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]  # time j/2 rounded half up
    assert torch.equal(up[0, 0, 2], torch.ones(4, 4))


def test_condition_puts_keyframes_and_the_kept_source_in_place():
    gen = torch.Generator().manual_seed(0)
    low = torch.randn(1, 4, 3, 4, 4, generator=gen)
    keyframes = torch.randn(1, 4, 2, 8, 8, generator=gen)
    source = torch.randn(1, 4, 5, 8, 8, generator=gen)
    keep = torch.zeros(1, 1, 5, 8, 8)
    keep[..., :4, :] = 1  # keep the top half of every frame
    black = torch.full((1, 4, 1, 1, 1), -0.5)
    cond = build_refiner_condition(
        low, size=(5, 8, 8), black_latent=black, keyframe_latents=keyframes, keyframe_indices=[0, 3],
        source_latents=source, keep_mask=keep,
    )  # fmt: skip
    up = upsample_latents(low, (5, 8, 8))
    expected_u = up.clone()
    expected_u[:, :, [0, 3]] = keyframes
    expected_u = torch.where(keep > 0, source, expected_u)
    torch.testing.assert_close(cond.upsampled, expected_u)
    expected_m = keep.clone()
    expected_m[:, :, [0, 3]] = 1
    assert torch.equal(cond.latent_mask, expected_m)
    expected_i = torch.where(keep > 0, source, torch.full_like(source, -0.5))
    expected_i[:, :, [0, 3]] = torch.where(keep[:, :, [0, 3]] > 0, source[:, :, [0, 3]], keyframes)
    torch.testing.assert_close(cond.conditional_latents, expected_i)
    noisy = torch.randn(1, 4, 5, 8, 8, generator=gen)
    stacked = cond.concat(noisy)
    assert stacked.shape == (1, 13, 5, 8, 8)
    torch.testing.assert_close(stacked[:, :4], noisy)
    torch.testing.assert_close(stacked[:, 8:9], expected_m)
    torch.testing.assert_close(stacked[:, 9:], expected_u)
    assert torch.equal(cond.loss_mask, 1 - expected_m)


def test_super_resolution_only_has_no_condition_mask():
    low = torch.randn(2, 4, 3, 4, 4)
    cond = build_refiner_condition(low, size=(5, 8, 8), black_latent=torch.zeros(4).view(1, 4, 1, 1, 1))
    assert torch.count_nonzero(cond.latent_mask) == 0 and torch.count_nonzero(cond.conditional_latents) == 0
    torch.testing.assert_close(cond.upsampled, upsample_latents(low, (5, 8, 8)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keyframe_indices": [1]}, "were given without keyframe_latents"),
        (
            {"keyframe_latents": torch.zeros(1, 4, 2, 8, 8), "keyframe_indices": [1]},
            "keyframe_latents must be",
        ),
        (
            {"keyframe_latents": torch.zeros(1, 4, 1, 8, 8), "keyframe_indices": [5]},
            "keyframe_indices must be distinct",
        ),
        ({"source_latents": torch.zeros(1, 4, 5, 8, 8)}, "must be given together"),
        (
            {"source_latents": torch.zeros(1, 4, 5, 8, 8), "keep_mask": torch.full((1, 1, 5, 8, 8), 0.5)},
            "keep_mask must be binary",
        ),
        (
            {"source_latents": torch.zeros(1, 3, 5, 8, 8), "keep_mask": torch.zeros(1, 1, 5, 8, 8)},
            "source_latents must have C = 4",
        ),
        ({"black_latent": torch.zeros(3)}, "black_latent must broadcast"),
        ({"size": (5, 8)}, "size must be three positive ints"),
    ],
)
def test_condition_errors(kwargs, message):
    args = {"size": (5, 8, 8), "black_latent": torch.zeros(1, 4, 1, 1, 1), **kwargs}
    with pytest.raises(ValueError, match=message):
        build_refiner_condition(torch.zeros(1, 4, 3, 4, 4), **args)


def test_joint_attention_mask_errors():
    vsa = VideoSparseAttention(dim=32, num_heads=2, config=VSAConfig(sparsity=0.0))
    q = k = v = torch.randn(1, 2 + 64 + 3, 2, 16)
    layout = GridLayout(num_reference=2, grid=(4, 4, 4))

    def run(mask):
        ctx = BlockContext(torch.zeros(1, 32), None, mask, torch.zeros(1, 3, 32), None)
        return vsa_joint_attention(vsa, q, k, v, layout=layout, gate_input=torch.zeros(1, 64, 32), ctx=ctx)

    assert run(KeyPaddingMask(valid_lengths=torch.tensor([67]))).shape == (1, 69, 2, 16)
    with pytest.raises(ValueError, match="the joint mask masks grid keys"):
        run(KeyPaddingMask(valid_lengths=torch.tensor([60])))
    with pytest.raises(TypeError, match="VSA needs the joint mask to be a key mask"):
        run(DenseMask(mask=torch.ones(1, 1, 69, 69, dtype=torch.bool)))
