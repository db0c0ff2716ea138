from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from skyreels_audio_vae import (
    audio_latent_index_for_frame,
    audio_latent_times,
    audio_samples_for_frames,
    crop_to_hop_multiple,
    num_audio_latents_for_frames,
    num_audio_latents_for_samples,
    num_audio_samples_for_frames,
    num_frames_for_audio_latents,
    pad_to_hop_multiple,
)


def test_paper_clip_81_frames_at_16_fps():
    assert audio_samples_for_frames(81, 16, 44100) == Fraction(89302500, 400)  # 223256.25
    assert float(audio_samples_for_frames(81, 16, 44100)) == 223256.25
    assert num_audio_samples_for_frames(81, 16, 44100) == 223256
    assert num_audio_latents_for_frames(81, 16) == 218  # 218.02 -> floor
    assert num_audio_latents_for_frames(81, 16, rounding="nearest") == 218
    assert num_audio_latents_for_frames(81, 16, rounding="ceil") == 219
    assert num_frames_for_audio_latents(218, 16) == 81
    assert num_audio_latents_for_samples(223256, 1024) == 218


def test_rounding_conventions_differ_where_expected():
    # 121 frames at 24 fps = 217.13 latents; 100 frames at 16 fps = 269.16; 30 frames at 24 fps = 53.83
    assert [num_audio_latents_for_frames(30, 24, rounding=r) for r in ("floor", "nearest", "ceil")] == [
        53,
        54,
        54,
    ]
    assert num_audio_latents_for_frames(121, 24) == 217
    with pytest.raises(ValueError, match="rounding"):
        num_audio_latents_for_frames(81, 16, rounding="up")  # type: ignore[arg-type]


def test_fractional_fps_and_input_checks():
    ntsc = Fraction(30000, 1001)
    assert audio_samples_for_frames(30000, ntsc, 48000) == 1001 * 48000
    assert audio_samples_for_frames(2997, 29.97, 44100) == 100 * 44100
    for bad in (0, -16, float("nan"), "16", True):
        with pytest.raises(ValueError, match="fps"):
            audio_samples_for_frames(81, bad, 44100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_frames"):
        num_audio_latents_for_frames(-1, 16)
    with pytest.raises(ValueError, match="hop_length"):
        num_audio_latents_for_frames(81, 16, hop_length=0)


@given(
    frames=st.integers(0, 5000), fps=st.sampled_from([8, 12, 15, 16, 24, 25, 30, Fraction(30000, 1001), 32])
)
def test_frames_latents_frames_round_trip_when_latents_are_denser(frames, fps):
    latents = num_audio_latents_for_frames(frames, fps)
    back = num_frames_for_audio_latents(latents, fps)
    assert back == frames
    # floor convention: the latents never describe sound after the last frame
    assert latents * 1024 <= audio_samples_for_frames(frames, fps, 44100) < (latents + 1) * 1024


@given(latents=st.integers(0, 5000), fps=st.sampled_from([16, 24, 30, 32]))
def test_frames_for_latents_is_the_fewest_that_cover(latents, fps):
    frames = num_frames_for_audio_latents(latents, fps)
    assert num_audio_latents_for_frames(frames, fps) >= latents
    if frames > 0:
        assert num_audio_latents_for_frames(frames - 1, fps) < latents


def test_latent_index_and_times():
    assert audio_latent_index_for_frame(0, 16) == 0
    assert audio_latent_index_for_frame(80, 16) == 215  # 5.0 s * 43.07 = 215.3
    times = audio_latent_times(3, anchor="center")
    torch.testing.assert_close(times, torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64) * 1024 / 44100)
    assert audio_latent_times(2)[1].item() == pytest.approx(1024 / 44100)


def test_pad_and_crop_to_hop_multiple():
    x = torch.arange(2500.0).reshape(1, 1, 2500)
    padded = pad_to_hop_multiple(x, 1024)
    assert (
        padded.shape[-1] == 3072
        and torch.equal(padded[..., :2500], x)
        and padded[..., 2500:].abs().sum() == 0
    )
    cropped = crop_to_hop_multiple(x, 1024)
    assert cropped.shape[-1] == 2048 and torch.equal(cropped, x[..., :2048])
    assert pad_to_hop_multiple(cropped, 1024) is cropped
