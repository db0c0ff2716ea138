"""Audio/video time alignment policies (paper section 3.1) and the worked 5 s example."""

from __future__ import annotations

import math

import pytest
import torch

from skyreels_av_rope import (
    HUNYUAN_VIDEO_ROPE,
    AudioTimeAlignment,
    RotaryConfig,
    VideoLatentTimestamp,
    audio_positions,
    audio_rotary_config,
    num_video_latents,
    temporal_ratio,
    video_grid_positions,
    video_latent_times,
    video_seconds_positions,
)

FPS, NUM_FRAMES, SAMPLE_RATE, HOP = 16, 81, 44100, 1024


def test_worked_example_from_the_paper() -> None:
    t_video = num_video_latents(NUM_FRAMES)
    duration = NUM_FRAMES / FPS  # 5.0625 s
    t_audio = math.floor(duration * SAMPLE_RATE / HOP)
    assert (t_video, t_audio) == (21, 218)
    assert temporal_ratio(t_video, t_audio) == pytest.approx(0.0963302752)
    pos = audio_positions(t_audio, alignment=AudioTimeAlignment.RATIO, num_video_latents=t_video)
    assert pos.shape == (218, 1)
    assert pos.dtype == torch.float32
    assert pos[:3, 0].tolist() == pytest.approx([0.0, 21 / 218, 42 / 218])
    assert pos[-1, 0].item() == pytest.approx(217 * 21 / 218)


def test_ratio_is_computed_from_the_clip_not_hard_coded() -> None:
    # A 10 s clip at 16 fps: 161 frames -> 41 latents; 431 audio latents.
    pos = audio_positions(431, alignment=AudioTimeAlignment.RATIO, num_video_latents=41)
    assert pos[1, 0].item() == pytest.approx(41 / 431)


def test_num_video_latents() -> None:
    assert num_video_latents(1) == 1
    assert num_video_latents(81) == 21
    assert num_video_latents(9, temporal_compression=8) == 2
    with pytest.raises(ValueError, match="num_frames: expected 1 \\+ 4k frames"):
        num_video_latents(80)


def test_video_latent_times_policies() -> None:
    last = video_latent_times(4, fps=16)
    first = video_latent_times(4, fps=16, timestamp=VideoLatentTimestamp.FIRST_FRAME)
    middle = video_latent_times(4, fps=16, timestamp=VideoLatentTimestamp.MIDDLE)
    assert last.tolist() == [0.0, 0.25, 0.5, 0.75]  # frames 0, 4, 8, 12
    assert first.tolist() == pytest.approx([0.0, 1 / 16, 5 / 16, 9 / 16])  # frames 0, 1, 5, 9
    assert middle.tolist() == pytest.approx([0.0, 2.5 / 16, 6.5 / 16, 10.5 / 16])  # mean of 1..4, 5..8, ...


def test_video_seconds_positions_in_latent_units_equal_the_integer_grid() -> None:
    seconds = video_seconds_positions(21, 2, 3, fps=FPS)
    assert seconds[:, 0].unique().tolist() == pytest.approx([i / 4 for i in range(21)])
    latent_units = video_seconds_positions(21, 2, 3, fps=FPS, video_latents_per_second=FPS / 4)
    torch.testing.assert_close(latent_units, video_grid_positions(21, 2, 3), atol=0, rtol=0)


def test_seconds_policy_any_clip_length() -> None:
    rate = SAMPLE_RATE / HOP
    pos = audio_positions(1000, alignment=AudioTimeAlignment.SECONDS, audio_tokens_per_second=rate)
    assert pos.shape == (1000, 1)
    assert pos[-1, 0].item() == pytest.approx(999 * HOP / SAMPLE_RATE)
    in_latents = audio_positions(
        10, alignment=AudioTimeAlignment.SECONDS, audio_tokens_per_second=rate, video_latents_per_second=4.0
    )
    assert in_latents[1, 0].item() == pytest.approx(4 * HOP / SAMPLE_RATE)


def test_temporal_channels_only_positions_and_config() -> None:
    pos = audio_positions(218, alignment=AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY, num_video_latents=21)
    assert pos.shape == (218, 3)
    assert (pos[:, 1:] == 0).all()
    torch.testing.assert_close(
        pos[:, :1], audio_positions(218, alignment=AudioTimeAlignment.RATIO, num_video_latents=21)
    )
    assert (
        audio_rotary_config(AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY, HUNYUAN_VIDEO_ROPE)
        is HUNYUAN_VIDEO_ROPE
    )


def test_audio_rotary_config_for_ratio_and_seconds() -> None:
    for policy in (AudioTimeAlignment.RATIO, AudioTimeAlignment.SECONDS):
        assert audio_rotary_config(policy, HUNYUAN_VIDEO_ROPE) == RotaryConfig(axes_dims=(128,), theta=256.0)


def test_t_offset_shifts_every_position() -> None:
    pos = audio_positions(4, alignment=AudioTimeAlignment.RATIO, num_video_latents=2, t_offset=-2.0)
    assert pos[:, 0].tolist() == [-2.0, -1.5, -1.0, -0.5]


@pytest.mark.parametrize("alignment", [AudioTimeAlignment.RATIO, AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY])
def test_audio_reference_is_spaced_like_the_clip(alignment: AudioTimeAlignment) -> None:
    """A 3-token reference before the paper clip (T_v 21, T_a 218): t_k = (k - 3) * 21/218, i.e. the
    clip's spacing 21/218, not 21/3 (what the reference's own token count would give)."""
    ratio = temporal_ratio(21, 218)
    reference = audio_positions(
        3, alignment=alignment, num_video_latents=21, clip_num_audio_tokens=218, t_offset=-3 * ratio
    )
    expected = ((torch.arange(3, dtype=torch.float64) - 3) * (21 / 218)).to(torch.float32)
    assert torch.equal(reference[:, 0], expected)
    assert reference[:, 0].tolist() == pytest.approx([-0.2889908, -0.1926606, -0.0963303])
    assert (reference[:, 1:] == 0).all()
    clip = audio_positions(218, alignment=alignment, num_video_latents=21)
    # Reference then clip: one evenly spaced time axis (spacing 21/218 throughout).
    joined = torch.cat([reference, clip])[:, 0].double()
    spacing = torch.full((220,), 21 / 218, dtype=torch.float64)
    torch.testing.assert_close(joined.diff(), spacing, atol=4e-6, rtol=0)  # float32 ulp at t = 21: 1.9e-6
    # The default (clip_num_audio_tokens = this call's count) is the clip itself.
    explicit = audio_positions(218, alignment=alignment, num_video_latents=21, clip_num_audio_tokens=218)
    assert torch.equal(clip, explicit)


def test_policies_are_strings_for_recipes() -> None:
    assert AudioTimeAlignment("ratio") is AudioTimeAlignment.RATIO
    assert AudioTimeAlignment("temporal_channels_only") is AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY
    assert VideoLatentTimestamp("last_frame") is VideoLatentTimestamp.LAST_FRAME


RATIO, SECONDS = AudioTimeAlignment.RATIO, AudioTimeAlignment.SECONDS


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alignment": RATIO}, ValueError, "num_video_latents: required by alignment=RATIO"),
        ({"alignment": "ratio", "num_video_latents": 2}, TypeError, "alignment"),
        (
            {"alignment": RATIO, "num_video_latents": 2, "audio_tokens_per_second": 43.0},
            ValueError,
            "not used",
        ),
        ({"alignment": RATIO, "num_video_latents": 0}, ValueError, "num_video_latents"),
        ({"alignment": SECONDS}, ValueError, "audio_tokens_per_second: required"),
        ({"alignment": SECONDS, "audio_tokens_per_second": -1.0}, ValueError, "audio_tokens_per_second"),
        (
            {"alignment": SECONDS, "audio_tokens_per_second": 43.0, "num_video_latents": 21},
            ValueError,
            "not used",
        ),
        (
            {"alignment": SECONDS, "audio_tokens_per_second": 43.0, "video_latents_per_second": 0},
            ValueError,
            "video_latents_per_second",
        ),
        ({"alignment": RATIO, "num_video_latents": 2, "t_offset": float("inf")}, ValueError, "t_offset"),
        (
            {"alignment": RATIO, "num_video_latents": 2, "clip_num_audio_tokens": 0},
            ValueError,
            "clip_num_audio_tokens: expected a positive int, got 0",
        ),
        (
            {"alignment": RATIO, "num_video_latents": 2, "clip_num_audio_tokens": 21.5},
            ValueError,
            "clip_num_audio_tokens: expected a positive int, got 21.5",
        ),
        (
            {"alignment": SECONDS, "audio_tokens_per_second": 43.0, "clip_num_audio_tokens": 218},
            ValueError,
            "clip_num_audio_tokens: not used by alignment=SECONDS",
        ),
    ],
)
def test_audio_positions_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        audio_positions(10, **kwargs)


def test_other_errors() -> None:
    with pytest.raises(ValueError, match="num_audio_tokens"):
        audio_positions(0, alignment=RATIO, num_video_latents=2)
    with pytest.raises(ValueError, match="fps"):
        video_latent_times(3, fps=0)
    with pytest.raises(TypeError, match="timestamp"):
        video_latent_times(3, fps=16, timestamp="last_frame")
    with pytest.raises(TypeError, match="video_config"):
        audio_rotary_config(RATIO, (16, 56, 56))
    with pytest.raises(TypeError, match="alignment"):
        audio_rotary_config("ratio", HUNYUAN_VIDEO_ROPE)
    with pytest.raises(ValueError, match="num_audio_tokens"):
        temporal_ratio(21, 0)
