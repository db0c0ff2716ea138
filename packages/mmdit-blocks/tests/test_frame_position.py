"""The optional frame-position signal of the video branch (``frame_position_frequencies``, beyond the
paper): its features in closed form, zero at initialisation, and wired into grid and reference tokens."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from skyreels_mmdit_blocks import (
    FramePositionEmbedding,
    JointAudioVideoTransformer,
    MMDiTBranchConfig,
    frame_position_features,
    joint_preset,
)


def _with_frame_position(k: int):
    config = joint_preset("tiny")
    return replace(config, video=replace(config.video, frame_position_frequencies=k))


def test_features_are_sines_and_cosines_of_the_normalised_row_and_column():
    features = frame_position_features((2, 3, 4), 2)
    assert features.shape == (2 * 3 * 4, 8) and features.dtype == torch.float32
    for t in range(2):
        for i in range(3):
            for j in range(4):
                u, v = (i + 0.5) / 3, (j + 0.5) / 4
                expected = [math.sin(math.pi * u), math.sin(2 * math.pi * u)]
                expected += [math.cos(math.pi * u), math.cos(2 * math.pi * u)]
                expected += [math.sin(math.pi * v), math.sin(2 * math.pi * v)]
                expected += [math.cos(math.pi * v), math.cos(2 * math.pi * v)]
                row = features[t * 12 + i * 4 + j]  # token order (t h w)
                assert torch.allclose(row, torch.tensor(expected), atol=1e-6), (t, i, j)
    # The first frequency tells the distance to the nearer edge: a mirrored row has the same sine.
    first, mirrored = features[0], features[8]  # row 0 and row 2, column 0
    assert torch.allclose(first[0], mirrored[0]) and not torch.allclose(first[2], mirrored[2])
    with pytest.raises(ValueError, match="num_frequencies"):
        frame_position_features((1, 2, 2), 0)


def test_the_embedding_starts_at_zero_and_maps_the_features_linearly():
    embedding = FramePositionEmbedding(dim=8, num_frequencies=3)
    assert not embedding((1, 2, 3)).any()
    with torch.no_grad():
        embedding.proj.weight.normal_()
        embedding.proj.bias.normal_()
    out = embedding((2, 2, 3))
    expected = frame_position_features((2, 2, 3), 3) @ embedding.proj.weight.T + embedding.proj.bias
    assert out.shape == (1, 12, 8) and torch.allclose(out[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="num_frequencies"):
        FramePositionEmbedding(dim=8, num_frequencies=True)


def test_a_zero_embedding_changes_nothing_and_a_trained_one_reaches_grid_and_reference_tokens(randomize):
    plain = randomize(JointAudioVideoTransformer(joint_preset("tiny")).eval(), seed=3)
    with_position = JointAudioVideoTransformer(_with_frame_position(4)).eval()
    missing, unexpected = with_position.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["video.frame_position.proj.bias", "video.frame_position.proj.weight"]
    assert not unexpected
    g = torch.Generator().manual_seed(0)
    inputs = {
        "timestep": torch.tensor([300.0, 700.0]),
        "text_tokens": torch.randn(2, 5, 32, generator=g),
    }
    video, audio = torch.randn(2, 9, 2, 4, 4, generator=g), torch.randn(2, 16, 8, generator=g)
    reference = torch.randn(2, 9, 1, 4, 4, generator=g)
    with torch.no_grad():
        for refs in (None, reference):
            a = plain(video, audio, video_reference_latents=refs, **inputs)
            b = with_position(video, audio, video_reference_latents=refs, **inputs)
            assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
        with_position.video.frame_position.proj.weight.normal_(std=0.5)
        moved = with_position(video, audio, **inputs)
        assert (moved.video - plain(video, audio, **inputs).video).abs().max() > 1e-3

        # The reference tokens get it too, on their own grid.
        seen = []
        original = with_position.video.frame_position.forward
        with_position.video.frame_position.forward = lambda grid: seen.append(tuple(grid)) or original(grid)
        with_position(video, audio, video_reference_latents=reference, **inputs)
    assert seen == [(2, 2, 2), (1, 2, 2)]


def test_only_the_video_branch_takes_it():
    config = joint_preset("tiny")
    with pytest.raises(ValueError, match="only the video branch"):
        replace(config.audio, frame_position_frequencies=2)
    for bad in (-1, 17, 1.5, True):
        with pytest.raises(ValueError, match="frame_position_frequencies"):
            replace(config.video, frame_position_frequencies=bad)
    assert isinstance(_with_frame_position(16).video, MMDiTBranchConfig)
