"""The optional time-phase signal of the audio branch (``time_phase_frequencies``, beyond the paper):
its features in closed form (periodic in one latent frame), zero at initialisation, and wired into the
audio tokens at their RoPE time."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from skyreels_mmdit_blocks import (
    JointAudioVideoTransformer,
    MMDiTBranchConfig,
    TimePhaseEmbedding,
    joint_preset,
    time_phase_features,
)


def _with_time_phase(k: int):
    config = joint_preset("tiny")
    return replace(config, audio=replace(config.audio, time_phase_frequencies=k))


def test_features_are_sines_and_cosines_of_the_phase_within_a_latent_frame():
    time = torch.tensor([[0.0, 0.25, 0.5, 1.75], [2.25, 3.0, 0.1, 5.5]])
    features = time_phase_features(time, 3)
    assert features.shape == (2, 4, 6) and features.dtype == torch.float32
    for b in range(2):
        for i in range(4):
            tau = float(time[b, i])
            expected = [math.sin(2 * math.pi * m * tau) for m in (1, 2, 3)]
            expected += [math.cos(2 * math.pi * m * tau) for m in (1, 2, 3)]
            assert torch.allclose(features[b, i], torch.tensor(expected), atol=1e-5), (b, i)
    # Periodic in one latent frame: 0.25 and 2.25 share features; 0.25 and 0.5 do not.
    assert torch.allclose(features[0, 1], features[1, 0], atol=1e-5)
    assert not torch.allclose(features[0, 1], features[0, 2], atol=1e-3)
    with pytest.raises(ValueError, match="num_frequencies"):
        time_phase_features(time, 0)
    with pytest.raises(TypeError, match="time"):
        time_phase_features([0.0], 1)  # type: ignore[arg-type]


def test_the_embedding_starts_at_zero_and_maps_the_features_linearly():
    embedding = TimePhaseEmbedding(dim=8, num_frequencies=2)
    time = torch.linspace(0, 3, 7)
    assert not embedding(time).any()
    with torch.no_grad():
        embedding.proj.weight.normal_()
        embedding.proj.bias.normal_()
    expected = time_phase_features(time, 2) @ embedding.proj.weight.T + embedding.proj.bias
    assert torch.allclose(embedding(time), expected, atol=1e-6)
    with pytest.raises(ValueError, match="num_frequencies"):
        TimePhaseEmbedding(dim=8, num_frequencies=True)


def test_a_zero_embedding_changes_nothing_and_a_trained_one_reaches_the_audio_at_its_rope_time(randomize):
    plain = randomize(JointAudioVideoTransformer(joint_preset("tiny")).eval(), seed=3)
    with_phase = JointAudioVideoTransformer(_with_time_phase(3)).eval()
    missing, unexpected = with_phase.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["audio.time_phase.proj.bias", "audio.time_phase.proj.weight"]
    assert not unexpected
    g = torch.Generator().manual_seed(0)
    inputs = {"timestep": torch.tensor([300.0, 700.0]), "text_tokens": torch.randn(2, 5, 32, generator=g)}
    video, audio = torch.randn(2, 9, 2, 4, 4, generator=g), torch.randn(2, 16, 8, generator=g)
    reference = torch.randn(2, 16, 3, generator=g)
    with torch.no_grad():
        for refs in (None, reference):
            a = plain(video, audio, audio_reference_latents=refs, **inputs)
            b = with_phase(video, audio, audio_reference_latents=refs, **inputs)
            assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
        with_phase.audio.time_phase.proj.weight.normal_(std=0.5)
        moved = with_phase(video, audio, **inputs)
        assert (moved.audio - plain(video, audio, **inputs).audio).abs().max() > 1e-3
        # The times it sees are the audio tokens' RoPE times on the video latent axis (k · T_v / T_a),
        # references included, before the clip.
        seen = []
        original = with_phase.audio.time_phase.forward
        with_phase.audio.time_phase.forward = lambda time: seen.append(time.clone()) or original(time)
        with_phase(video, audio, audio_reference_latents=reference, **inputs)
    (time,) = seen
    expected = torch.arange(-3, 8, dtype=torch.float32) * 2 / 8  # T_v = 2 latent frames, T_a = 8 tokens
    assert torch.allclose(time.flatten()[-11:], expected, atol=1e-6)


def test_only_the_audio_branch_takes_it():
    config = joint_preset("tiny")
    with pytest.raises(ValueError, match="only the audio branch"):
        replace(config.video, time_phase_frequencies=2)
    for bad in (-1, 17, 1.5, True):
        with pytest.raises(ValueError, match="time_phase_frequencies"):
            replace(config.audio, time_phase_frequencies=bad)
    assert isinstance(_with_time_phase(16).audio, MMDiTBranchConfig)
