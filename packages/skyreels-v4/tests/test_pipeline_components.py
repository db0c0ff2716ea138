"""Absent components (``[null, null]`` in model_index.json) load as None and are named only by the tasks
that need them; the per-call sampling config's embedded guidance reaches the model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from skyreels_v4.errors import FileFormatError, SkyReelsError
from skyreels_v4.model import SkyReelsV4Transformer
from skyreels_v4.pipeline import GenerationRequest, SkyReelsV4Pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "A red circle bounces. <sfx>A blip.</sfx>"


def _without(pipe, **absent) -> SkyReelsV4Pipeline:
    parts = {
        "video_vae": pipe.video_vae,
        "audio_vae": pipe.audio_vae,
        "text_encoder": pipe.text_encoder,
        **absent,
    }
    return SkyReelsV4Pipeline(
        transformer=pipe.transformer, sampling=pipe.sampling, defaults=pipe.defaults, **parts
    )


def test_a_folder_without_an_audio_vae_loads_and_runs_video_only_tasks(tiny_pipe, tmp_path):
    folder = _without(tiny_pipe, audio_vae=None).save_pretrained(tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["audio_vae"] == [None, None] and not (folder / "audio_vae").exists()
    pipe = SkyReelsV4Pipeline.from_pretrained(folder)
    assert pipe.audio_vae is None and pipe.video_vae is not None
    out = pipe(PROMPT, task="t2v", seed=1, progress=False)
    assert out.audio is None and out.video.shape == (3, 9, 32, 32)
    assert torch.isfinite(out.video).all()
    for fields in (
        dict(task="t2av"),
        dict(task="t2a"),
        dict(task="i2av", image=torch.zeros(3, 32, 32)),
    ):
        with pytest.raises(SkyReelsError, match=rf"audio_vae: .*task '{fields['task']}' needs one"):
            pipe(PROMPT, progress=False, **fields)
    with pytest.raises(SkyReelsError, match=r"audio_vae: .*encoding the request's audio needs one"):
        pipe(
            "@audio_1 hums.",
            task="t2v",
            reference_audios=(torch.zeros(1, 800),),
            audio_sample_rate=16000,
            progress=False,
        )


def test_missing_text_encoder_or_video_vae_is_named(tiny_pipe, tmp_path):
    no_text = SkyReelsV4Pipeline.from_pretrained(
        _without(tiny_pipe, text_encoder=None).save_pretrained(tmp_path / "no_text")
    )
    assert no_text.text_encoder is None
    with pytest.raises(SkyReelsError, match=r"text_encoder: .*encoding the prompt needs one"):
        no_text(PROMPT, task="t2v", progress=False)
    no_text.text_encoder = tiny_pipe.text_encoder  # the way out the message names
    assert no_text(PROMPT, task="t2v", progress=False).video is not None
    no_video = _without(tiny_pipe, video_vae=None)
    with pytest.raises(SkyReelsError, match=r"video_vae: .*task 't2a' \(its latent grid\) needs one"):
        no_video(PROMPT, task="t2a", progress=False)


def test_model_index_entries_are_checked(tiny_folder, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "audio_vae": ["skyreels_v4.vae"]}))
    with pytest.raises(FileFormatError, match=r"audio_vae: expected \[package, class\] or \[null, null\]"):
        SkyReelsV4Pipeline.from_pretrained(folder)
    shutil.rmtree(folder / "text_encoder")
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(FileFormatError, match="the component folder 'text_encoder' is missing"):
        SkyReelsV4Pipeline.from_pretrained(folder)


def test_the_per_call_embedded_guidance_reaches_the_model(tiny_pipe, monkeypatch):
    config = tiny_pipe.transformer.config
    config = replace(config, video=replace(config.video, guidance_embedding=True))
    torch.manual_seed(0)
    transformer = SkyReelsV4Transformer(config).eval()
    with torch.no_grad():
        for parameter in transformer.parameters():
            if not bool(parameter.any()):
                parameter.normal_(0.0, 0.05)
    pipe = SkyReelsV4Pipeline(
        transformer=transformer,
        video_vae=tiny_pipe.video_vae,
        audio_vae=tiny_pipe.audio_vae,
        text_encoder=tiny_pipe.text_encoder,
        sampling=replace(tiny_pipe.sampling, embedded_guidance=6.0, video_guidance=1.0, audio_guidance=1.0),
        defaults=tiny_pipe.defaults,
    )
    seen = []
    forward = SkyReelsV4Transformer.forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs["guidance"].clone())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SkyReelsV4Transformer, "forward", spy)
    request = GenerationRequest(prompt=PROMPT, task="t2av")
    folder_value = pipe(request, progress=False)
    assert [float(g[0]) for g in seen] == [6000.0, 6000.0]
    seen.clear()
    per_call = pipe(request, sampling=replace(pipe.sampling, embedded_guidance=2.5), progress=False)
    assert [float(g[0]) for g in seen] == [2500.0, 2500.0]
    assert not torch.equal(folder_value.video_latents, per_call.video_latents)
    with pytest.raises(
        SkyReelsError, match=r"sampling\.embedded_guidance: this model has a guidance embedding"
    ):
        pipe(request, sampling=replace(pipe.sampling, embedded_guidance=None), progress=False)


def test_t2v_holds_the_audio_and_skips_the_audio_branch_only_when_the_video_cannot_read_it(
    tiny_pipeline_factory, monkeypatch
):
    from skyreels_v4.pipeline import denoise

    pipe = tiny_pipeline_factory()
    request = GenerationRequest(prompt=PROMPT, task="t2v", seed=4)
    prepared = pipe.prepare(request)
    assert denoise.video_reads_audio(pipe.transformer)  # the tiny model's exchanges are random
    video, audio = pipe.sample(prepared, progress=False)
    assert torch.equal(audio, prepared.audio_noise)  # t2v: audio held at σ = 1 noise, as in training
    calls = []
    monkeypatch.setattr(
        type(pipe.transformer.video), "forward", lambda *a, **k: calls.append(1) or 1 / 0
    )  # the video branch alone must not run while the video reads audio
    assert torch.equal(pipe.sample(prepared, progress=False)[0], video) and not calls
    monkeypatch.undo()

    with torch.no_grad():  # a video branch that reads nothing from the audio (as after conversion)
        for exchange in pipe.transformer.exchanges:
            exchange.video_from_audio.out.weight.zero_()
            exchange.video_from_audio.out.bias.zero_()
    assert not denoise.video_reads_audio(pipe.transformer)
    joint_forward = type(pipe.transformer).forward
    joint_calls = []
    monkeypatch.setattr(
        type(pipe.transformer), "forward", lambda *a, **k: joint_calls.append(1) or joint_forward(*a, **k)
    )
    fast, _ = pipe.sample(prepared, progress=False)
    assert not joint_calls  # the joint forward (audio branch + exchanges) did not run
    monkeypatch.setattr(denoise, "video_reads_audio", lambda transformer: True)
    joint, _ = pipe.sample(prepared, progress=False)
    assert joint_calls and torch.equal(fast, joint)  # bit-identical video
