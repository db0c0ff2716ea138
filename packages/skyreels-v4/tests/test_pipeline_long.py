"""Long clips by chained extension: each window keeps its context exactly (latent level), the stitched
clip keeps every earlier frame and sample, and the audio has no step at the seams."""

from __future__ import annotations

import pytest
import torch

from skyreels_v4.errors import SkyReelsError
from skyreels_v4.pipeline import GenerationRequest

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "A ball rolls across a table. <sfx>A steady hum.</sfx>"


def test_generate_long_keeps_context_and_stitches_without_seams(tiny_pipe):
    long = tiny_pipe.generate_long(
        GenerationRequest(prompt=PROMPT, seed=4),
        total_frames=21,
        window_frames=9,
        overlap_frames=5,
        progress=False,
    )
    clip = long.output
    assert clip.video.shape == (3, 21, 32, 32) and clip.audio.shape == (1, round(21 / 16 * 16000))
    assert long.frame_starts == (0, 4, 8, 12) and len(long.windows) == 4
    vae, codec = tiny_pipe.video_vae, tiny_pipe.audio_vae
    # The first window is the clip's start, untouched.
    assert torch.equal(clip.video[:, :9], long.windows[0].video)
    for k in range(1, 4):
        window, start = long.windows[k], long.frame_starts[k]
        # the window's first two latent frames are the encoded overlap (the prefix is unchanged) ...
        context = clip.video[:, start : start + 5]
        assert torch.equal(window.video_latents[:, :, :2], vae.encode(context[None]))
        # ... and the clip takes the window's new frames after the overlap.
        end = min(start + 9, 21)
        assert torch.equal(clip.video[:, start + 5 : end], window.video[:, 5 : end - start])
    for k, seam in enumerate(long.audio_seams, start=1):
        window = long.windows[k]
        audio_start = round(long.frame_starts[k] / 16 * 16000)
        kept = seam - audio_start
        assert kept > 0 and kept % codec.hop_length == 0
        # the window reproduces the audio it kept (the exact codec: to float rounding) ...
        torch.testing.assert_close(window.audio[:, :kept], clip.audio[:, audio_start:seam], atol=1e-5, rtol=0)
        # ... so the step across the seam is one of the window's own steps: bounded by its largest.
        step = (clip.audio[:, seam] - clip.audio[:, seam - 1]).abs().max()
        inner = window.audio.diff(dim=1).abs().max()
        assert float(step) <= float(inner) + 1e-6
        assert torch.equal(clip.audio[:, seam : seam + 100], window.audio[:, kept : kept + 100])


def test_generate_long_rejects_lengths_that_do_not_fit(tiny_pipe):
    request = GenerationRequest(prompt=PROMPT)
    for kwargs, name in (
        (dict(total_frames=21, window_frames=8, overlap_frames=5), "window_frames"),
        (dict(total_frames=21, window_frames=9, overlap_frames=4), "overlap_frames"),
        (dict(total_frames=21, window_frames=9, overlap_frames=9), "overlap_frames"),
        (dict(total_frames=0, window_frames=9, overlap_frames=5), "total_frames"),
    ):
        with pytest.raises(SkyReelsError, match=name):
            tiny_pipe.generate_long(request, **kwargs, progress=False)
    with pytest.raises(SkyReelsError, match="task"):
        tiny_pipe.generate_long(
            GenerationRequest(prompt=PROMPT, task="t2a"), total_frames=21, window_frames=9, overlap_frames=5
        )


def test_join_audio_fades_between_two_renderings_of_the_same_stretch():
    """Two renderings of one tone that differ in phase (what two Griffin-Lim decodes of the same
    magnitudes give): a hard cut jumps, the raised-cosine fade has no step larger than the tone's own;
    identical renderings join bit-exactly."""
    from skyreels_v4.pipeline.long import join_audio

    rate, fade = 16000, 512
    t = torch.arange(4000, dtype=torch.float64) / rate
    first = torch.sin(2 * torch.pi * 440 * t)[None]
    second = torch.sin(2 * torch.pi * 440 * t + 2.5)[None]  # the same tone, another phase
    seam = 2000
    cut = join_audio(first[:, :seam], second[:, seam:], fade=0)
    faded = join_audio(first[:, :seam], second[:, seam - fade :], fade=fade)
    assert cut.shape == faded.shape == (1, 4000)
    own_step = float(first.diff(dim=1).abs().max())
    assert float(cut.diff(dim=1).abs().max()) > 3 * own_step  # the hard cut clicks (a 0.77 jump here)
    assert float(faded.diff(dim=1).abs().max()) <= 1.05 * own_step
    assert torch.equal(faded[:, : seam - fade], first[:, : seam - fade])
    assert torch.equal(faded[:, seam:], second[:, seam:])
    same = join_audio(first[:, :seam], first[:, seam - fade :], fade=fade)
    assert torch.equal(same, first)
    with pytest.raises(SkyReelsError, match="fade: 600 samples is longer"):
        join_audio(first[:, :100], second, fade=600)
    with pytest.raises(SkyReelsError, match="fade: expected a sample count >= 0"):
        join_audio(first, second, fade=-1)


def test_generate_long_rejects_a_bad_crossfade(tiny_pipe):
    with pytest.raises(SkyReelsError, match=r"audio_crossfade: expected seconds >= 0, got -0\.1"):
        tiny_pipe.generate_long(
            GenerationRequest(prompt=PROMPT), total_frames=21, window_frames=9, overlap_frames=5,
            audio_crossfade=-0.1,
        )  # fmt: skip
