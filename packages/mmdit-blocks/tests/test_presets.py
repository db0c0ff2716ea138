"""Presets: the full configuration on the meta device, parameter counts checked by hand and vs diffusers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel

from skyreels_mmdit_blocks import (
    PRESET_NAMES,
    JointAudioVideoTransformer,
    MMDiTBranch,
    count_parameters,
    joint_preset,
    parameter_counts,
)


def linear(i: int, o: int) -> int:
    return i * o + o


D, HD, F = 3072, 128, 4 * 3072  # width, head dim, MLP width


def hunyuan_video_count(in_channels: int = 16) -> int:
    """HunyuanVideo-13B transformer parameters, by hand from its architecture (FACTS.md)."""
    dual = 2 * (linear(D, 6 * D) + linear(D, 3 * D) + 2 * HD + linear(D, D) + linear(D, F) + linear(F, D))
    single = linear(D, 3 * D) + linear(D, 3 * D + F) + 2 * HD + linear(D + F, D)
    refiner_block = (
        2 * (2 * D) + linear(D, 3 * D) + linear(D, D) + linear(D, F) + linear(F, D) + linear(D, 2 * D)
    )
    refiner = (
        linear(4096, D) + linear(256, D) + linear(D, D) + linear(4096, D) + linear(D, D) + 2 * refiner_block
    )
    condition = 2 * (linear(256, D) + linear(D, D)) + linear(768, D) + linear(D, D)  # time, guidance, pooled
    patch = in_channels * 1 * 2 * 2 * D + D
    final = linear(D, 2 * D) + linear(D, 1 * 2 * 2 * 16)
    return patch + condition + refiner + 20 * dual + 40 * single + final


# eq. 4: affine LayerNorm on the queries, q, kv, per-head RMSNorm gains on q and k, out.
TEXT_CROSS = 2 * D + linear(D, D) + linear(D, 2 * D) + 2 * HD + linear(D, D)
# One direction of eq. 5: the same plus an affine LayerNorm on the context stream.
AV_CROSS = TEXT_CROSS + 2 * D


def test_hand_formula_equals_diffusers_hunyuan_video():
    with torch.device("meta"):
        reference = HunyuanVideoTransformer3DModel()  # default config = HunyuanVideo-13B
    assert count_parameters(reference) == hunyuan_video_count() == 12_821_012_544


def test_full_preset_parameter_counts_on_meta():
    config = joint_preset("full")
    counts = parameter_counts(config)
    # Video branch: HunyuanVideo-13B with a 33-channel patch embedding (eq. 7) and eq. 4 in its 40
    # single-stream blocks.
    assert counts.video.total == hunyuan_video_count(in_channels=33) + 40 * TEXT_CROSS == 14_331_918_400
    assert counts.video.text_cross_attention == 40 * TEXT_CROSS
    # Audio branch: same blocks, 64-channel 1-D patches, no guidance embedding, no eq. 4.
    no_guidance = linear(256, D) + linear(D, D)
    audio = (
        hunyuan_video_count(in_channels=0) - D - no_guidance + linear(64, D) - linear(D, 64) + linear(D, 64)
    )
    assert counts.audio.total == audio == 12_810_782_784
    assert counts.exchanges == 60 * 2 * AV_CROSS == 4_532_828_160
    assert counts.total == counts.video.total + counts.audio.total + counts.exchanges == 31_675_529_344


def test_full_video_branch_without_new_layers_is_exactly_hunyuan_video():
    config = replace(joint_preset("full").video, in_channels=16, text_cross_attention_blocks=())
    with torch.device("meta"):
        branch = MMDiTBranch(config)
    assert count_parameters(branch) == hunyuan_video_count()
    assert all(p.device.type == "meta" for p in branch.parameters())


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_are_consistent(name):
    config = joint_preset(name)
    assert config.video.dim == config.audio.dim and len(config.exchange_pairs) == config.video.num_blocks
    assert config.video.in_channels == 2 * config.video.out_channels + 1  # Concat(V, I, M)


def test_tiny_preset_runs():
    model = JointAudioVideoTransformer(joint_preset("tiny")).eval()
    with torch.no_grad():
        out = model(
            torch.randn(1, 9, 3, 4, 6),
            torch.randn(1, 16, 12),
            timestep=torch.tensor([500.0]),
            text_tokens=torch.randn(1, 6, 32),
        )
    assert out.video.shape == (1, 4, 3, 4, 6) and out.audio.shape == (1, 16, 12)
    assert torch.isfinite(out.video).all() and out.video.abs().max() > 0


def test_unknown_preset():
    with pytest.raises(ValueError, match="name must be one of"):
        joint_preset("huge")
