"""The planner of skyreels_v4.scale (issue 15): tokens, FLOPs, parameter state and activation memory
against analytic counts and measured CPU memory."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from skyreels_av_rope import AudioTimeAlignment, RotaryConfig, audio_rotary_config
from skyreels_mmdit_blocks import JointAudioVideoTransformer, JointAudioVideoTransformerConfig, joint_preset
from skyreels_v4.scale.activations import activation_memory
from skyreels_v4.scale.measure import measure_training_memory
from skyreels_v4.scale.plan import (
    ParallelLayout,
    clip_tokens,
    count_forward_flops,
    parse_layout,
    parse_memory,
    parse_resolution,
    plan,
)
from skyreels_v4.scale.plan_cli import main, markdown


@pytest.fixture(scope="module")
def tiny_plan():
    """One plan shared by the tests below (counting FLOPs on fake tensors takes seconds)."""
    return plan(
        "tiny", "256x256", 8, 2, 4, "1GB", [parse_layout("1x4x1"), parse_layout("1x1x4")],
        low_resolution="64x64",
    )  # fmt: skip


def test_tokens_of_the_paper_format():
    tokens = clip_tokens(joint_preset("full"), 1920, 1080, 32, 15)
    assert tokens.pixel_frames == 481
    assert tokens.video_latent == (121, 136, 240)  # 1 + 480/4; 1080/8 = 135 -> 136 for the 2x2 patch
    assert tokens.video_tokens == 121 * 68 * 120
    assert tokens.audio_latents == 646  # ceil(15 * 44100 / 1024)
    # 5 s at 16 fps -> 81 frames (1 + 4k) -> 21 video latents (paper 3.1); ceil(5 * 44100 / 1024) audio.
    short = clip_tokens(joint_preset("full"), 848, 480, 16, 5)
    assert (short.pixel_frames, short.video_latent, short.audio_latents) == (81, (21, 60, 106), 216)


def _analytic_attention_flops(config, lv, la, lt):
    """4·D·Lq·Lk per attention (QK^T and PV), summed over every attention of the joint model."""
    d = config.video.dim
    total = 0
    for branch, n in ((config.video, lv), (config.audio, la)):
        total += branch.num_blocks * 4 * d * (n + lt) ** 2
        total += len(branch.text_cross_attention_blocks) * 4 * d * n * lt
        total += branch.num_refiner_blocks * 4 * d * lt * lt
    total += len(config.exchange_pairs) * 2 * 4 * d * lv * la
    return total


def test_forward_flops_count_every_attention_quadratic_term():
    config = joint_preset("tiny")
    flops = count_forward_flops(config, video_latent=(3, 8, 12), audio_latents=29, text_tokens=7)
    assert flops.attention == _analytic_attention_flops(config, 3 * 4 * 6, 29, 7)
    # The rest is dominated by the linear layers: 2 FLOPs per multiply-add per token per weight.
    assert flops.other > 2 * (3 * 4 * 6) * 64 * 64
    assert flops.training == flops.total + 2 * flops.other + flops.attention * 5 // 2


def test_parameter_state_matches_a_real_adamw_step(tiny_plan):
    """16 bytes per parameter: fp32 weights, fp32 gradients, AdamW's two fp32 moments."""
    config = joint_preset("tiny")
    model = JointAudioVideoTransformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    measured = sum(p.nbytes + p.grad.nbytes for p in model.parameters())
    measured += sum(t.nbytes for s in optimizer.state.values() for t in s.values() if t.ndim > 0)
    assert tiny_plan.parameters == sum(p.numel() for p in model.parameters())
    assert tiny_plan.layouts[0].parameter_state == -(-measured // 4)  # sharded over four ranks


def _mid_config() -> JointAudioVideoTransformerConfig:
    tiny = joint_preset("tiny")
    rope = RotaryConfig(axes_dims=(16, 24, 24), theta=256.0)
    video = replace(
        tiny.video, dim=192, num_heads=3, num_dual_blocks=1, num_single_blocks=2, rope=rope,
        text_cross_attention_blocks=(1, 2),
    )  # fmt: skip
    audio = replace(
        tiny.audio, dim=192, num_heads=3, num_dual_blocks=1, num_single_blocks=1,
        rope=audio_rotary_config(AudioTimeAlignment.RATIO, rope),
    )  # fmt: skip
    return JointAudioVideoTransformerConfig(video=video, audio=audio)


CASES = [
    ("tiny", (1, (5, 16, 16), 60, 12)),
    ("mid", (2, (3, 16, 16), 40, 12)),
]


@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-ac", "ac"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("name", "shape"), CASES, ids=[c[0] for c in CASES])
def test_activation_memory_within_15_percent_of_measured(name, shape, dtype, checkpointing):
    torch.manual_seed(0)
    config = joint_preset("tiny") if name == "tiny" else _mid_config()
    batch, (t, h, w), la, lt = shape
    model = JointAudioVideoTransformer(config).to(dtype)
    model.set_activation_checkpointing(checkpointing)
    video = torch.randn(batch, config.video.in_channels, t, h, w, dtype=dtype)
    audio = torch.randn(batch, config.audio.in_channels, la, dtype=dtype)
    text = torch.randn(batch, lt, config.video.text_dim, dtype=dtype)
    step = torch.full((batch,), 500.0)

    def forward():
        return tuple(model(video, audio, timestep=step, text_tokens=text))

    measured = measure_training_memory(forward, lambda out: sum(o.float().square().mean() for o in out))
    predicted = activation_memory(
        config,
        video_tokens=t * h * w // 4,
        audio_tokens=la,
        text_tokens=lt,
        batch=batch,
        compute_bytes=dtype.itemsize,
        checkpointing=checkpointing,
        video_input_elements=video[0].numel(),
        audio_input_elements=audio[0].numel(),
    )
    assert predicted.stored == pytest.approx(measured.stored, rel=0.15)
    if not checkpointing:
        assert predicted.peak == pytest.approx(measured.peak, rel=0.15)
    else:
        # While units are recomputed, the parameter gradients of the units already done exist too;
        # the planner counts gradients in the parameter state, so the measured peak lies between.
        gradients = sum(p.nbytes for p in model.parameters())
        assert 0.85 * predicted.peak <= measured.peak <= predicted.peak + gradients


def test_sequence_parallel_divides_video_activations(tiny_plan):
    result = tiny_plan
    dp, sp = result.layouts
    assert sp.video_tokens_per_device == -(-dp.video_tokens_per_device // 4)
    assert sp.activations.stored < dp.activations.stored / 2
    assert sp.parameter_state == dp.parameter_state  # both shard the weights over 4 ranks
    assert all(row.activations_checkpointed.stored < row.activations.stored for row in result.layouts)


def test_argument_validation_names_the_argument():
    with pytest.raises(ValueError, match="resolution"):
        parse_resolution("huge")
    with pytest.raises(ValueError, match="gpu_memory"):
        parse_memory("80 parsecs")
    assert parse_memory("80GB") == 80 * 1024**3
    with pytest.raises(ValueError, match="layout"):
        parse_layout("2x2")
    with pytest.raises(ValueError, match="dp_shard"):
        ParallelLayout(dp_shard=0)
    with pytest.raises(ValueError, match="uses 4 ranks; gpus is 8"):
        plan("tiny", "64x64", 8, 1, 8, "1GB", [parse_layout("1x2x2")])
    with pytest.raises(ValueError, match="sp=3 must divide"):
        plan("tiny", "64x64", 8, 1, 3, "1GB", [parse_layout("1x1x3")])
    with pytest.raises(ValueError, match="preset"):
        plan("huge", "64x64", 8, 1, 1, "1GB")
    with pytest.raises(ValueError, match="fps"):
        plan("tiny", "64x64", float("nan"), 1, 1, "1GB")


def test_cli_markdown_json_and_user_errors(capsys, tiny_plan):
    out = markdown(tiny_plan)
    assert "| 1x4x1 | 1,280 |" in out and "| 1x1x4 | 320 |" in out and "training step" in out
    args = ["--preset", "tiny", "--resolution", "64x64", "--fps", "8", "--seconds", "1", "--gpus", "2",
            "--gpu-memory", "1GB", "--low-resolution", "32x32"]  # fmt: skip
    assert main([*args, "--json", "--layout", "2x1x1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["layout"] for row in data["layouts"]] == ["2x1x1"] and data["layouts"][0]["fits"]
    assert main([*args, "--gpu-memory", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpu_memory" in err
