"""Every task runs end to end on the tiny pipeline and writes a playable file (paper 3.2-3.3): the mp4 is
decoded with PyAV and its streams, frame count, frame rate, duration and sample rate are checked; the
conditioned content is kept at the latent level."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from skyreels_v4.pipeline import GenerationRequest

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "A red circle bounces inside a black box. <sfx>A short blip.</sfx>"
F, S, FPS, RATE = 9, 32, 16.0, 16000


def _pixels(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _wave(seconds: float, seed: int) -> torch.Tensor:
    return torch.rand(1, int(seconds * RATE), generator=torch.Generator().manual_seed(seed)) * 0.4 - 0.2


CASES = {
    "t2av": dict(task="t2av"),
    "t2v": dict(task="t2v"),
    "i2v": dict(task="i2v", image=_pixels(3, S, S, seed=1)),
    "i2av": dict(task="i2av", image=_pixels(3, S, S, seed=1)),
    "v2a": dict(task="v2a", video=_pixels(3, F, S, S, seed=2)),
    "a2v": dict(task="a2v", audio=_wave(F / FPS, 3), audio_sample_rate=RATE),
    "extend": dict(
        task="extend", video=_pixels(3, 5, S, S, seed=4), audio=_wave(5 / FPS, 5), audio_sample_rate=RATE
    ),
    "interpolate": dict(
        task="interpolate", image=_pixels(3, S, S, seed=6), last_image=_pixels(3, S, S, seed=7)
    ),
    "edit": dict(
        task="edit", video=_pixels(3, F, S, S, seed=8), edit_mask=torch.arange(S)[None, :].expand(S, S) < 16
    ),
    "image_reference": dict(
        prompt="@image_1 walks left. <sfx>Steps.</sfx>", reference_images=(_pixels(3, S, S, seed=9),)
    ),
    "video_reference": dict(
        prompt="The ball of @video_1 rolls. <bgm>Calm.</bgm>",
        reference_videos=(_pixels(3, 5, S, S, seed=10),),
    ),
    "audio_reference": dict(
        prompt="A man speaks. <dialogue>Hello there.</dialogue> Voice like @audio_1.",
        reference_audios=(_wave(0.2, 11),),
        audio_sample_rate=RATE,
    ),
    "multi_shot": dict(
        prompt="A room. <bgm>Soft piano.</bgm>\n[shot 1: 0.25s] A door opens.\n"
        "[shot 2: 0.3125s] A cat walks in."
    ),
    "i2v_with_references": dict(
        task="i2v",
        prompt="@image_1 and @video_1 meet. <sfx>A bell.</sfx>",
        image=_pixels(3, S, S, seed=12),
        reference_images=(_pixels(3, S, S, seed=13),),
        reference_videos=(_pixels(3, 5, S, S, seed=14),),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_task_writes_a_playable_mp4(name, tiny_pipe, tmp_path, mp4_probe):
    fields = {"prompt": PROMPT, "seed": 3, **CASES[name]}
    request = GenerationRequest(**fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a2v pads a partial audio latent: said in a warning
        out = tiny_pipe(request, progress=False)
    want_frames = {"extend": 13, "multi_shot": 9}.get(name, F)
    assert out.video.shape == (3, want_frames, S, S)
    path = out.save(tmp_path / f"{name}.mp4", wav=True)
    info = mp4_probe(path)
    assert info["has_video"] and info["codec"] == "h264"
    assert info["frames"] == want_frames and info["size"] == (S, S)
    assert info["fps"] == pytest.approx(FPS)
    # The mp4's frames are the output's frames: compare luma (4:2:0 halves the chroma of noise-like
    # tiny-model frames); H.264 at crf 18 keeps it within a few levels on average.
    luma = torch.tensor([0.299, 0.587, 0.114])
    decoded = torch.from_numpy(info["pixels"]).float() @ luma
    written = torch.from_numpy(out.frames()).float() @ luma
    assert float((decoded - written).abs().mean()) < 8
    if request.task.outputs_audio:
        assert info["has_audio"] and info["audio_codec"] == "aac"
        assert info["audio_rate"] == RATE and info["audio_channels"] == 1
        assert out.audio.shape == (1, round(want_frames / FPS * RATE))
        # AAC adds at most one frame of priming/padding (1024 samples) on each side.
        assert abs(info["audio_samples"] - out.audio.shape[1]) <= 2048
        assert (tmp_path / f"{name}.wav").is_file()
    else:
        assert not info["has_audio"] and out.audio is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{name}.mp4"] + ([f"{name}.wav"] if request.task.outputs_audio else [])
    )


def test_t2a_writes_a_wav(tiny_pipe, tmp_path):
    import soundfile

    out = tiny_pipe(GenerationRequest(prompt=PROMPT, task="t2a", seed=1), progress=False)
    assert out.video is None and out.audio.shape == (1, round(F / FPS * RATE))
    path = out.save(tmp_path / "sound.wav")
    data, rate = soundfile.read(path, always_2d=True)
    assert rate == RATE and data.shape == (out.audio.shape[1], 1)
    assert abs(data[:, 0] - out.audio[0].numpy()).max() < 1 / 32767 + 1e-6
    with pytest.raises(ValueError, match="video"):
        out.save(tmp_path / "sound.mp4")
    assert [p.name for p in tmp_path.iterdir()] == ["sound.wav"]


def test_i2v_first_latent_frame_is_the_encoded_image(tiny_pipe):
    image = _pixels(3, S, S, seed=21)
    out = tiny_pipe(GenerationRequest(prompt=PROMPT, task="i2v", image=image, seed=0), progress=False)
    encoded = tiny_pipe.video_vae.encode(image[None, :, None])
    assert torch.equal(out.video_latents[:, :, :1], encoded)
    torch.testing.assert_close(out.video[:, 0], image, atol=1e-5, rtol=0)  # the codec is invertible


def test_interpolation_keeps_first_and_last_frames(tiny_pipe):
    first, last = _pixels(3, S, S, seed=22), _pixels(3, S, S, seed=23)
    out = tiny_pipe(
        GenerationRequest(prompt=PROMPT, task="interpolate", image=first, last_image=last), progress=False
    )
    torch.testing.assert_close(out.video[:, 0], first, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.video[:, -1], last, atol=1e-5, rtol=0)


def test_extension_prefix_is_unchanged_in_latents_and_audio(tiny_pipe):
    prefix, sound = _pixels(3, 5, S, S, seed=24), _wave(5 / FPS, 25)
    request = GenerationRequest(
        prompt=PROMPT, task="extend", video=prefix, audio=sound, audio_sample_rate=RATE, num_frames=13
    )
    out = tiny_pipe(request, progress=False)
    encoded = tiny_pipe.video_vae.encode(prefix[None])
    assert torch.equal(out.video_latents[:, :, : encoded.shape[2]], encoded)
    kept_audio = tiny_pipe.audio_vae.encode(sound[None], RATE)
    assert torch.equal(out.audio_latents[..., : kept_audio.shape[-1]], kept_audio)
    torch.testing.assert_close(out.video[:, :5], prefix, atol=1e-5, rtol=0)
    # the generated continuation is new content, not a copy of the prefix
    assert not torch.allclose(out.video_latents[:, :, 2:], encoded[:, :, -1:].expand(-1, -1, 2, -1, -1))


def test_edit_keeps_the_unmasked_region(tiny_pipe):
    video = _pixels(3, F, S, S, seed=26)
    keep = torch.zeros(S, S, dtype=torch.bool)
    keep[:, :16] = True  # left half kept: whole 4x4 latent cells
    out = tiny_pipe(
        GenerationRequest(prompt=PROMPT, task="edit", video=video, edit_mask=keep), progress=False
    )
    encoded = tiny_pipe.video_vae.encode(video[None])
    assert torch.equal(out.video_latents[..., :4], encoded[..., :4])
    assert not torch.allclose(out.video_latents[..., 4:], encoded[..., 4:])
    torch.testing.assert_close(out.video[..., :16], video[..., :16], atol=1e-5, rtol=0)


def test_v2a_leaves_the_video_untouched_and_a2v_keeps_the_audio(tiny_pipe):
    video = _pixels(3, F, S, S, seed=27)
    out = tiny_pipe(GenerationRequest(prompt=PROMPT, task="v2a", video=video), progress=False)
    assert torch.equal(out.video, video)
    assert torch.equal(out.video_latents, tiny_pipe.video_vae.encode(video[None]))
    sound = _wave(0.6, 28)  # longer than the clip's 9 frames: cut to the video with a warning
    with pytest.warns(UserWarning, match="audio"):
        out = tiny_pipe(
            GenerationRequest(prompt=PROMPT, task="a2v", audio=sound, audio_sample_rate=RATE, num_frames=F),
            progress=False,
        )
    encoded = tiny_pipe.audio_vae.encode(sound[None], RATE)
    assert torch.equal(out.audio_latents, encoded[..., : out.audio_latents.shape[-1]])
    # The output carries the given track itself, not a decode of its latents (codecs need not be exact).
    assert torch.equal(out.audio, sound[:, : out.audio.shape[-1]])


def test_seeds_are_bit_reproducible_and_distinct(tiny_pipe):
    runs = [tiny_pipe(GenerationRequest(prompt=PROMPT, seed=s), progress=False) for s in (5, 5, 6)]
    assert torch.equal(runs[0].video_latents, runs[1].video_latents)
    assert torch.equal(runs[0].audio_latents, runs[1].audio_latents)
    assert not torch.equal(runs[0].video_latents, runs[2].video_latents)
    assert not torch.equal(runs[0].audio_latents, runs[2].audio_latents)


def test_progress_bar_and_callback_run_once_per_step(tiny_pipe, monkeypatch):
    from tqdm.auto import tqdm

    import skyreels_v4.pipeline.pipeline as module
    from skyreels_v4.pipeline import SamplingConfig

    bars = []

    class RecordingBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shown = not kwargs.get("disable", False)
            bars.append(self)

    monkeypatch.setattr(module, "tqdm", RecordingBar)

    steps = []
    sampling = SamplingConfig(num_steps=3, video_guidance=2.0, audio_guidance=2.0)
    tiny_pipe(
        GenerationRequest(prompt=PROMPT, task="t2v"),
        sampling=sampling,
        progress=True,
        callback=lambda i, sigma, state: steps.append((i, sigma, state[0].shape)),
    )
    assert [s[0] for s in steps] == [0, 1, 2]
    assert steps[-1][1] == 0.0 and all(a[1] > b[1] for a, b in itertools.pairwise(steps))
    assert len(bars) == 1 and bars[0].total == 3 and bars[0].n == 3 and bars[0].shown


def test_multi_shot_duration_sets_and_checks_the_length(tiny_pipe):
    from skyreels_v4.errors import PromptError

    prompt = "[shot 1: 0.5s] A door opens.\n[shot 2: 0.5625s] A cat walks in."
    prepared = tiny_pipe.prepare(GenerationRequest(prompt=prompt))
    assert prepared.num_frames == 17  # 1.0625 s at 16 fps
    assert "Shot 2 (0.5-1.062 s): A cat walks in." in prepared.prompt.text
    with pytest.raises(PromptError, match="num_frames"):
        tiny_pipe.prepare(GenerationRequest(prompt=prompt, num_frames=9))


def test_references_are_packed_in_prompt_order(tiny_pipe):
    a, b = _pixels(3, S, S, seed=30), _pixels(3, S, S, seed=31)
    clip = _pixels(3, 5, S, S, seed=32)
    prepared = tiny_pipe.prepare(
        GenerationRequest(
            prompt="@video_1 then @image_2 then @image_1.", reference_images=(a, b), reference_videos=(clip,)
        )
    )
    assert prepared.prompt.visual_labels == ("@video_1", "@image_2", "@image_1")
    vae = tiny_pipe.video_vae
    expected = torch.cat(
        [vae.encode(clip[None]), vae.encode(b[None, :, None]), vae.encode(a[None, :, None])], 2
    )
    reference = prepared.condition.video_reference  # Concat(Z, Z, valid)
    c = vae.latent_channels
    assert torch.equal(reference[:, :c, : expected.shape[2]], expected)


def test_task_montage_renders_a_png(tmp_path):
    from skyreels_v4.pipeline.montage import render_task_montage

    path = render_task_montage(tmp_path / "tasks.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tasks.png"]
