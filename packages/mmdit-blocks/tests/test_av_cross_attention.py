"""Audio-video cross-attention (eq. 5): zero init, order, time-only RoPE, key masks, fp64 reference."""

from __future__ import annotations

import pytest
import torch

from skyreels_attention import DenseMask, KeyPaddingMask
from skyreels_av_rope import RotaryConfig, RotaryEmbedding, cross_modal_time_rope, video_grid_positions
from skyreels_mmdit_blocks import (
    AudioVideoCrossAttention,
    AVExchangeOrder,
    CrossModalAttention,
    Rotary,
    key_mask_from_bool,
    time_window_mask,
)
from skyreels_mmdit_blocks.reference import reference_av_exchange

D, HEADS, THETA = 32, 2, 256.0
GRID = (3, 2, 2)  # video (t, h, w)
NUM_AUDIO = 10


def _positions():
    video = video_grid_positions(*GRID)
    audio = (torch.arange(NUM_AUDIO, dtype=torch.float32) * GRID[0] / NUM_AUDIO)[:, None]  # RATIO
    return video, audio


def _rotaries(video_pos, audio_pos):
    rope = RotaryEmbedding(RotaryConfig(axes_dims=(D // HEADS,), theta=THETA))
    v, a = cross_modal_time_rope(video_pos, audio_pos, rope=rope)
    return Rotary(*v), Rotary(*a)


def _tokens(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 12, D, generator=g), torch.randn(2, NUM_AUDIO, D, generator=g)


def test_exchange_is_exactly_the_identity_at_init():
    layer = AudioVideoCrossAttention(dim=D, num_heads=HEADS)
    video, audio = _tokens()
    new_video, new_audio = layer(video, audio, video_rotary=None, audio_rotary=None)
    assert torch.equal(new_video, video) and torch.equal(new_audio, audio)


@pytest.mark.parametrize("order", list(AVExchangeOrder))
def test_exchange_matches_reference(order, randomize):
    layer = randomize(AudioVideoCrossAttention(dim=D, num_heads=HEADS, order=order), seed=7, std=0.3)
    video, audio = _tokens(1)
    video_pos, audio_pos = _positions()
    video_rotary, audio_rotary = _rotaries(video_pos, audio_pos)
    new_video, new_audio = layer(video, audio, video_rotary=video_rotary, audio_rotary=audio_rotary)
    ref_video, ref_audio = reference_av_exchange(
        layer, video, audio, video_times=video_pos[:, 0], audio_times=audio_pos[:, 0], theta=THETA
    )
    assert (new_video.double() - ref_video).abs().max().item() <= 1e-5
    assert (new_audio.double() - ref_audio).abs().max().item() <= 1e-5
    assert (new_video - video).abs().max() > 1e-2 and (new_audio - audio).abs().max() > 1e-2


def test_paper_order_reads_the_updated_audio(randomize):
    sequential = randomize(AudioVideoCrossAttention(dim=D, num_heads=HEADS), seed=7, std=0.3)
    parallel = AudioVideoCrossAttention(dim=D, num_heads=HEADS, order=AVExchangeOrder.PARALLEL)
    parallel.load_state_dict(sequential.state_dict())
    video, audio = _tokens(2)
    seq_video, seq_audio = sequential(video, audio, video_rotary=None, audio_rotary=None)
    par_video, par_audio = parallel(video, audio, video_rotary=None, audio_rotary=None)
    assert torch.equal(seq_audio, par_audio)  # audio reads the same video either way
    assert (seq_video - par_video).abs().max() > 1e-3  # video reads a' vs a
    # Sequential: video's update equals one direction applied to the updated audio.
    direct = sequential.video_from_audio(video, seq_audio, x_rotary=None, context_rotary=None)
    assert torch.equal(direct, seq_video)


def test_rope_is_by_time_only_and_relative(randomize):
    layer = randomize(AudioVideoCrossAttention(dim=D, num_heads=HEADS), seed=8, std=0.3)
    video, audio = _tokens(3)
    video_pos, audio_pos = _positions()
    rv, ra = _rotaries(video_pos, audio_pos)
    base = layer(video, audio, video_rotary=rv, audio_rotary=ra)
    # Spatial coordinates do not matter; shifting both time axes together does not either.
    moved_video = video_pos.clone()
    moved_video[:, 1:] += 7.0
    moved_video[:, 0] += 2.5
    rv, ra = _rotaries(moved_video, audio_pos + 2.5)
    shifted = layer(video, audio, video_rotary=rv, audio_rotary=ra)
    assert (shifted[0] - base[0]).abs().max().item() <= 1e-5
    assert (shifted[1] - base[1]).abs().max().item() <= 1e-5
    # Shifting only the audio time changes the alignment and the result.
    rv, ra = _rotaries(video_pos, audio_pos + 1.0)
    misaligned = layer(video, audio, video_rotary=rv, audio_rotary=ra)
    assert (misaligned[0] - base[0]).abs().max() > 1e-3


def test_order_must_be_the_enum():
    with pytest.raises(TypeError, match="order must be an AVExchangeOrder"):
        AudioVideoCrossAttention(dim=D, num_heads=HEADS, order="parallel")


def test_key_mask_from_bool_picks_the_cheapest_mask():
    assert key_mask_from_bool(None) is None
    assert key_mask_from_bool(torch.ones(2, 5, dtype=torch.bool)) is None
    prefix = torch.arange(5)[None, :] < torch.tensor([[3], [0]])
    padding = key_mask_from_bool(prefix)
    assert isinstance(padding, KeyPaddingMask) and padding.valid_lengths.tolist() == [3, 0]
    holes = torch.tensor([[True, False, True, True, True], [True] * 5])
    dense = key_mask_from_bool(holes)
    assert isinstance(dense, DenseMask) and torch.equal(dense.mask, holes[:, None, None, :])
    with pytest.raises(ValueError, match=r"audio_key_mask must be a bool tensor \[B, L\]; got torch.int64"):
        key_mask_from_bool(torch.ones(2, 5, dtype=torch.int64), name="audio_key_mask")


def _key_masks(kind):
    """(video_valid [2, 12], audio_valid [2, 10]) for the exchange tests."""
    if kind == "prefix":  # key padding; sample 1 has no audio key at all
        video = torch.arange(12)[None, :] < torch.tensor([[12], [7]])
        audio = torch.arange(NUM_AUDIO)[None, :] < torch.tensor([[6], [0]])
    else:  # holes: dense masks
        video = torch.ones(2, 12, dtype=torch.bool)
        video[0, [1, 5]] = False
        audio = torch.ones(2, NUM_AUDIO, dtype=torch.bool)
        audio[1, [0, 4, 9]] = False
    return video, audio


@pytest.mark.parametrize("kind", ["prefix", "holes"])
@pytest.mark.parametrize("order", list(AVExchangeOrder))
def test_exchange_key_masks_match_reference(order, kind, randomize):
    layer = randomize(AudioVideoCrossAttention(dim=D, num_heads=HEADS, order=order), seed=9, std=0.3)
    video, audio = _tokens(4)
    video_pos, audio_pos = _positions()
    video_rotary, audio_rotary = _rotaries(video_pos, audio_pos)
    video_valid, audio_valid = _key_masks(kind)
    masks = {
        "video_key_mask": key_mask_from_bool(video_valid),
        "audio_key_mask": key_mask_from_bool(audio_valid),
    }
    expected_type = KeyPaddingMask if kind == "prefix" else DenseMask
    assert isinstance(masks["video_key_mask"], expected_type)
    assert isinstance(masks["audio_key_mask"], expected_type)
    new_video, new_audio = layer(video, audio, video_rotary=video_rotary, audio_rotary=audio_rotary, **masks)
    ref_video, ref_audio = reference_av_exchange(
        layer,
        video,
        audio,
        video_times=video_pos[:, 0],
        audio_times=audio_pos[:, 0],
        theta=THETA,
        video_valid=video_valid,
        audio_valid=audio_valid,
    )
    assert torch.isfinite(new_video).all() and torch.isfinite(new_audio).all()
    assert (new_video.double() - ref_video).abs().max().item() <= 1e-5
    assert (new_audio.double() - ref_audio).abs().max().item() <= 1e-5
    unmasked = layer(video, audio, video_rotary=video_rotary, audio_rotary=audio_rotary)
    assert (unmasked[0] - new_video).abs().max() > 1e-3  # the masks do change what is read
    if kind == "prefix":  # sample 1 of the video reads no audio key: attention 0, update = out bias
        bias = layer.video_from_audio.out.bias
        assert (new_video[1] - (video[1] + bias)).abs().max().item() <= 1e-6


def test_cross_modal_rotary_must_cover_every_token():
    layer = CrossModalAttention(dim=D, num_heads=HEADS)
    video, audio = _tokens(5)
    video_pos, audio_pos = _positions()
    video_rotary, audio_rotary = _rotaries(video_pos, audio_pos)
    short = Rotary(video_rotary.cos[:10], video_rotary.sin[:10])
    with pytest.raises(
        ValueError, match="context_rotary must have one row per latent token: expected 12 rows, got 10"
    ):
        layer(audio, video, x_rotary=audio_rotary, context_rotary=short)
    with pytest.raises(
        ValueError, match="x_rotary must have one row per latent token: expected 12 rows, got 10"
    ):
        layer(video, audio, x_rotary=short, context_rotary=audio_rotary)


def test_time_window_mask_keeps_exactly_the_keys_within_the_window():
    query = torch.tensor([0.0, 0.5, 2.6])
    key = torch.tensor([0.0, 1.0, 2.0])
    mask = time_window_mask(query, key, window=1.0)
    assert isinstance(mask, DenseMask) and mask.mask.shape == (1, 1, 3, 3)
    expected = [[True, True, False], [True, True, False], [False, False, True]]
    assert mask.mask[0, 0].tolist() == expected
    keys = torch.tensor([[True, False, True], [True, True, True]])
    both = time_window_mask(query, key, window=1.0, key_mask=keys)
    assert both.mask.shape == (2, 1, 3, 3)
    assert both.mask[0, 0].tolist() == [[True, False, False], [True, False, False], [False, False, True]]
    assert both.mask[1, 0].tolist() == expected
    batched = time_window_mask(torch.stack([query, query + 1]), torch.stack([key, key]), window=0.5)
    assert batched.mask[1, 0].tolist() == [[False, True, False], [False, True, True], [False, False, False]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0.0}, "window must be a finite number > 0; got 0.0"),
        ({"window": float("inf")}, "window must be a finite number > 0"),
        ({"window": True}, "window must be a finite number > 0; got True"),
        ({"window": 1.0, "key_mask": torch.ones(1, 3)}, r"key_mask must be a bool tensor \[B, Lk\]"),
        ({"window": 1.0, "key_mask": torch.ones(1, 4, dtype=torch.bool)}, "key_mask covers 4 keys"),
    ],
)
def test_time_window_mask_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        time_window_mask(torch.zeros(2), torch.zeros(3), **kwargs)
    with pytest.raises(ValueError, match=r"query_time must be a float tensor \[L\] or \[B, L\]"):
        time_window_mask(torch.zeros(2, dtype=torch.long), torch.zeros(3), window=1.0)


@pytest.mark.parametrize("window", [0.4, 1.0])
@pytest.mark.parametrize("order", list(AVExchangeOrder))
def test_time_local_exchange_matches_reference(order, window, randomize):
    """Eq. 5 restricted to |t_audio - t_video| <= window, against the fp64 reference that builds the
    window pair by pair; at 0.4 some audio tokens have no video frame in reach (zero attention)."""
    layer = randomize(AudioVideoCrossAttention(dim=D, num_heads=HEADS, order=order), seed=11, std=0.3)
    video, audio = _tokens(6)
    video_pos, audio_pos = _positions()
    video_rotary, audio_rotary = _rotaries(video_pos, audio_pos)
    video_valid, audio_valid = _key_masks("holes")
    vt, at = video_pos[:, 0], audio_pos[:, 0]
    masks = {
        "video_key_mask": time_window_mask(at, vt, window=window, key_mask=video_valid),
        "audio_key_mask": time_window_mask(vt, at, window=window, key_mask=audio_valid),
    }
    new_video, new_audio = layer(video, audio, video_rotary=video_rotary, audio_rotary=audio_rotary, **masks)
    ref_video, ref_audio = reference_av_exchange(
        layer, video, audio, video_times=vt, audio_times=at, theta=THETA,
        video_valid=video_valid, audio_valid=audio_valid, window=window,
    )  # fmt: skip
    assert torch.isfinite(new_video).all() and torch.isfinite(new_audio).all()
    assert (new_video.double() - ref_video).abs().max().item() <= 1e-5
    assert (new_audio.double() - ref_audio).abs().max().item() <= 1e-5
    globally = layer(video, audio, video_rotary=video_rotary, audio_rotary=audio_rotary)
    assert (globally[1] - new_audio).abs().max() > 1e-3  # the window does change what is read
