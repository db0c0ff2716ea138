"""Property tests: rotated attention logits depend only on position differences, and audio/video
tokens at the same instant share their temporal phase under RATIO and SECONDS."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skyreels_av_rope import (
    HUNYUAN_VIDEO_ROPE,
    AudioTimeAlignment,
    RotaryConfig,
    RotaryEmbedding,
    apply_rotary,
    audio_positions,
    audio_rotary_config,
    cross_modal_time_rope,
    video_grid_positions,
    video_seconds_positions,
)

SMALL_ROPE = RotaryConfig(axes_dims=(4, 6, 6), theta=256.0)
coordinate = st.floats(min_value=-40, max_value=40, allow_nan=False, width=32)
triple = st.tuples(coordinate, coordinate, coordinate)


def _logit(rope: RotaryEmbedding, q: torch.Tensor, k: torch.Tensor, pq: tuple, pk: tuple) -> torch.Tensor:
    """q . k after rotating q at position pq and k at pk; q, k: [D]."""
    cos, sin = rope(torch.tensor([pq, pk], dtype=torch.float64))
    rotated = apply_rotary(torch.stack((q, k))[None, :, None], cos.double(), sin.double())[0, :, 0]
    return rotated[0] @ rotated[1]


@settings(max_examples=60, deadline=None)
@given(pq=triple, pk=triple, shift=triple, seed=st.integers(0, 2**16))
def test_logits_invariant_to_a_common_shift(pq, pk, shift, seed) -> None:
    rope = RotaryEmbedding(SMALL_ROPE)
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 16, generator=g, dtype=torch.float64)
    moved_q = tuple(a + s for a, s in zip(pq, shift))
    moved_k = tuple(a + s for a, s in zip(pk, shift))
    # Tables are float32 (angles up to ~80 rad): allow float32 phase error.
    torch.testing.assert_close(
        _logit(rope, q, k, moved_q, moved_k), _logit(rope, q, k, pq, pk), atol=1e-4, rtol=1e-4
    )


@settings(max_examples=60, deadline=None)
@given(pq=triple, pk=triple, seed=st.integers(0, 2**16))
def test_logits_are_a_function_of_the_position_difference(pq, pk, seed) -> None:
    """q_i . k_j == sum_pairs Re(q_pair * conj(k_pair) * exp(i * omega_pair . (p_i - p_j)))."""
    rope = RotaryEmbedding(SMALL_ROPE)
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 16, generator=g, dtype=torch.float64)
    diff = tuple(a - b for a, b in zip(pq, pk))
    cos, sin = rope(torch.tensor([diff], dtype=torch.float64))
    zq = torch.view_as_complex(q.reshape(-1, 2).contiguous())
    zk = torch.view_as_complex(k.reshape(-1, 2).contiguous())
    expected = (zq * zk.conj() * torch.complex(cos[0].double(), sin[0].double())).real.sum()
    torch.testing.assert_close(_logit(rope, q, k, pq, pk), expected, atol=1e-4, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(t_video=st.integers(2, 30), per_latent=st.integers(1, 12))
def test_ratio_audio_and_video_at_the_same_instant_share_phase(t_video: int, per_latent: int) -> None:
    t_audio = t_video * per_latent  # audio token per_latent * j is at the instant of video latent j
    video_pos = video_grid_positions(t_video, 2, 3)
    audio_pos = audio_positions(t_audio, alignment=AudioTimeAlignment.RATIO, num_video_latents=t_video)
    rope = RotaryEmbedding(audio_rotary_config(AudioTimeAlignment.RATIO, HUNYUAN_VIDEO_ROPE))
    (video_cos, video_sin), (audio_cos, audio_sin) = cross_modal_time_rope(video_pos, audio_pos, rope=rope)
    video_first_token_of_latent = torch.arange(t_video) * 6
    audio_at_latent = torch.arange(t_video) * per_latent
    torch.testing.assert_close(
        audio_cos[audio_at_latent], video_cos[video_first_token_of_latent], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        audio_sin[audio_at_latent], video_sin[video_first_token_of_latent], atol=1e-6, rtol=0
    )
    # Tokens between two latents are not in phase with either (the test can fail).
    if per_latent > 1:
        assert not torch.allclose(audio_cos[1], video_cos[0])


@settings(max_examples=40, deadline=None)
@given(
    fps=st.sampled_from([8, 16, 24, 32]),
    per_latent=st.integers(1, 12),
    t_video=st.integers(2, 25),
    latent_units=st.booleans(),
)
def test_seconds_audio_and_video_at_the_same_instant_share_phase(
    fps, per_latent, t_video, latent_units
) -> None:
    latents_per_second = fps / 4
    audio_rate = latents_per_second * per_latent  # audio token per_latent * j is at video latent j's time
    scale = latents_per_second if latent_units else None
    video_pos = video_seconds_positions(t_video, 1, 2, fps=fps, video_latents_per_second=scale)
    audio_pos = audio_positions(
        t_video * per_latent + 3,  # audio may run a little longer than the video
        alignment=AudioTimeAlignment.SECONDS,
        audio_tokens_per_second=audio_rate,
        video_latents_per_second=scale,
    )
    rope = RotaryEmbedding(RotaryConfig(axes_dims=(32,)))
    (video_cos, video_sin), (audio_cos, audio_sin) = cross_modal_time_rope(video_pos, audio_pos, rope=rope)
    video_tokens = torch.arange(t_video) * 2
    audio_tokens = torch.arange(t_video) * per_latent
    torch.testing.assert_close(audio_cos[audio_tokens], video_cos[video_tokens], atol=1e-5, rtol=0)
    torch.testing.assert_close(audio_sin[audio_tokens], video_sin[video_tokens], atol=1e-5, rtol=0)


def test_temporal_channels_only_shares_the_video_temporal_phase() -> None:
    rope = RotaryEmbedding(audio_rotary_config(AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY, HUNYUAN_VIDEO_ROPE))
    video_cos, video_sin = rope(video_grid_positions(21, 2, 2))
    audio_cos, audio_sin = rope(
        audio_positions(42, alignment=AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY, num_video_latents=21)
    )
    temporal = slice(0, 8)  # the 16 temporal channels = 8 pairs
    torch.testing.assert_close(audio_cos[::2, temporal], video_cos[::4, temporal], atol=1e-6, rtol=0)
    torch.testing.assert_close(audio_sin[::2, temporal], video_sin[::4, temporal], atol=1e-6, rtol=0)
    # Spatial pairs of audio are unrotated: cos 1, sin 0.
    assert (audio_cos[:, 8:] == 1).all()
    assert (audio_sin[:, 8:] == 0).all()
