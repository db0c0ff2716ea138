"""Time-only RoPE for the audio-video cross-attention (paper eq. 5)."""

from __future__ import annotations

import pytest
import torch

from skyreels_av_rope import (
    HUNYUAN_VIDEO_ROPE,
    AudioTimeAlignment,
    RotaryConfig,
    RotaryEmbedding,
    apply_rotary,
    audio_positions,
    cross_modal_time_rope,
    time_only_positions,
    video_grid_positions,
)


def test_cross_attention_logits_depend_only_on_time_difference(generator: torch.Generator) -> None:
    rope = RotaryEmbedding(RotaryConfig(axes_dims=(32,)))
    video_pos = video_grid_positions(3, 2, 2)  # 12 tokens, t in {0, 1, 2}
    audio_pos = audio_positions(6, alignment=AudioTimeAlignment.RATIO, num_video_latents=3)  # t = 0, .5, ..
    (vc, vs), (ac, as_) = cross_modal_time_rope(video_pos, audio_pos, rope=rope)
    q = torch.randn(1, 1, 2, 32, generator=generator).expand(
        1, 6, 2, 32
    )  # the same query at every audio token
    k = torch.randn(1, 1, 2, 32, generator=generator).expand(1, 12, 2, 32)
    logits = torch.einsum("bqhd,bkhd->bhqk", apply_rotary(q, ac, as_), apply_rotary(k, vc, vs))[0, 0]
    # Video tokens of one latent frame (different h, w) get identical logits: space is ignored.
    torch.testing.assert_close(logits[:, 0:4], logits[:, 0:1].expand(6, 4))
    # Audio token 2 (t=1) vs video latent 1 equals audio token 0 (t=0) vs video latent 0 (both dt=0),
    # and audio token 4 (t=2) vs latent 1 equals audio token 2 vs latent 0 (dt=1).
    torch.testing.assert_close(logits[2, 4], logits[0, 0])
    torch.testing.assert_close(logits[4, 4], logits[2, 0])
    assert not torch.allclose(logits[2, 0], logits[0, 0])


def test_video_axis_split_rotates_only_temporal_channels() -> None:
    rope = RotaryEmbedding(HUNYUAN_VIDEO_ROPE)
    (vc, vs), (ac, as_) = cross_modal_time_rope(
        video_grid_positions(2, 3, 3), torch.tensor([[0.5], [1.0]]), rope=rope
    )
    assert (as_[:, 8:] == 0).all()
    assert vc.shape == (18, 64)
    assert ac.shape == (2, 64)
    assert (vc[:, 8:] == 1).all()
    assert (vs[:, 8:] == 0).all()
    assert (ac[:, 8:] == 1).all()
    torch.testing.assert_close(ac[1], vc[9])  # audio at t=1 and video latent 1


def test_time_only_positions_batched() -> None:
    pos = torch.tensor([[[2.0, 5.0, 7.0]], [[3.0, 1.0, 1.0]]])
    out = time_only_positions(pos, 1)
    assert out.tolist() == [[[2.0]], [[3.0]]]
    assert time_only_positions(torch.tensor([[1.5]]), 3).tolist() == [[1.5, 0.0, 0.0]]


def test_errors() -> None:
    rope = RotaryEmbedding(HUNYUAN_VIDEO_ROPE)
    with pytest.raises(ValueError, match="positions"):
        cross_modal_time_rope(torch.zeros(4), torch.zeros(4, 1), rope=rope)
    with pytest.raises(TypeError, match="rope"):
        cross_modal_time_rope(torch.zeros(4, 3), torch.zeros(4, 1), rope=HUNYUAN_VIDEO_ROPE)
    with pytest.raises(ValueError, match="num_axes"):
        time_only_positions(torch.zeros(4, 3), 0)
