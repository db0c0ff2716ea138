"""``skyreels-v4 probe`` (training/probe.py): the clean-estimate error per noise level, checked on
models whose answer is known in closed form."""

from __future__ import annotations

import json

import pytest
import torch

from skyreels_v4.model import PredictionType
from skyreels_v4.pipeline import SkyReelsV4Pipeline
from skyreels_v4.training.probe import denoising_probe, latent_frame_of_audio_tokens, main
from skyreels_v4.world import ProceduralAVDataset, WorldConfig, WorldSplit

WORLD = WorldConfig(size=32, num_frames=9, fps=16.0, sample_rate=16000, max_objects=2)


def _zero_output(pipe: SkyReelsV4Pipeline, prediction: PredictionType) -> None:
    pipe.transformer.prediction = prediction
    pipe.transformer.register_forward_hook(lambda module, args, out: type(out)(*(t * 0 for t in out)))


def test_a_model_that_predicts_x0_zero_scores_the_clean_latents_energy(tiny_folder, one_thread):
    pipe = SkyReelsV4Pipeline.from_pretrained(tiny_folder)
    _zero_output(pipe, PredictionType.X0)
    results = denoising_probe(pipe, world=WORLD, sigmas=(0.3, 1.0), num_clips=2, seed=5)
    data = ProceduralAVDataset(WORLD, length=2, seed=5, split=WorldSplit.HELDOUT)
    energy = sum(float(pipe.video_vae.encode(data[i]["video"][None]).square().mean()) for i in range(2)) / 2
    for row in results.values():  # x̂0 = 0 whatever the input: error = E[x0²], no noise dependence
        assert row["video_x0_mse"] == pytest.approx(energy, rel=1e-5)
        assert row["video_noise_sensitivity"] == pytest.approx(0.0, abs=1e-9)
        assert row["audio_noise_sensitivity"] == pytest.approx(0.0, abs=1e-9)
        assert row["audio_video_dependence"] == 0.0  # x̂0 = 0 with either video


def _request(item, seed):
    from skyreels_v4.pipeline import GenerationRequest

    return GenerationRequest(
        prompt=item["caption"], task="t2av", seed=seed, num_frames=9, height=32, width=32, fps=16.0
    )


def test_a_model_that_predicts_zero_velocity_follows_the_noise(tiny_folder, one_thread):
    pipe = SkyReelsV4Pipeline.from_pretrained(tiny_folder)
    _zero_output(pipe, PredictionType.VELOCITY)
    results = denoising_probe(pipe, world=WORLD, sigmas=(0.5, 1.0), num_clips=2, seed=5)
    data = ProceduralAVDataset(WORLD, length=2, seed=5, split=WorldSplit.HELDOUT)
    clean = [pipe.video_vae.encode(data[i]["video"][None]) for i in range(2)]
    for row in results.values():
        # x̂0 = x_σ: the estimate moves exactly as the input does, and at σ = 1 it is the noise itself.
        assert row["video_noise_sensitivity"] == pytest.approx(1.0, rel=1e-5)
        assert row["audio_noise_sensitivity"] == pytest.approx(1.0, rel=1e-5)
        assert row["audio_video_dependence"] == 0.0  # x̂0 = x_σ: the video plays no part
    noises = [pipe.prepare(_request(data[i], 5 + i)).video_noise for i in range(2)]
    expected = sum(float((n - z).square().mean()) for n, z in zip(noises, clean, strict=True)) / 2
    # The first draw is the pipeline's own noise; the second another N(0, 1) draw: same error on average.
    assert results["1"]["video_x0_mse"] == pytest.approx(expected, rel=0.1)


def test_audio_video_dependence_measures_how_the_audio_follows_the_video_order(tiny_folder, one_thread):
    from skyreels_v4.pipeline import GenerationRequest

    pipe = SkyReelsV4Pipeline.from_pretrained(tiny_folder)
    pipe.transformer.prediction = PredictionType.X0
    channels = pipe.video_vae.latent_channels

    def first_minus_last(video: torch.Tensor) -> torch.Tensor:
        return video[:, :channels, 0].mean() - video[:, :channels, -1].mean()

    def audio_from_video_order(module, args, out):  # x̂0_audio = a number that reversal changes
        parts = list(out)
        parts[0], parts[1] = parts[0] * 0, parts[1] * 0 + first_minus_last(args[0])
        return type(out)(*parts)

    pipe.transformer.register_forward_hook(audio_from_video_order)
    results = denoising_probe(pipe, world=WORLD, sigmas=(0.5, 1.0), num_clips=2, seed=5)
    data = ProceduralAVDataset(WORLD, length=2, seed=5, split=WorldSplit.HELDOUT)
    moved = energy = 0.0
    for i in range(2):
        forward, backward = (
            first_minus_last(
                pipe.prepare(
                    GenerationRequest(
                        prompt=data[i]["caption"], task="v2a", seed=5 + i, video=video, fps=16.0
                    )
                ).condition.conditional_latents
            )
            for video in (data[i]["video"], data[i]["video"].flip(1))
        )
        moved, energy = moved + float((forward - backward) ** 2), energy + float(forward**2)
    assert moved > 0
    for row in results.values():
        assert row["audio_video_dependence"] == pytest.approx(moved / energy, rel=1e-5)


def test_the_command_writes_json_and_picture_and_rejects_bad_input(tiny_folder, tmp_path, one_thread, capsys):
    out = tmp_path / "probe"
    assert main(["--model", str(tiny_folder), "--out", str(out), "--clips", "1", "--sigmas", "0.5,1"]) == 0
    rows = json.loads((out / "probe.json").read_text())
    assert sorted(rows) == ["0.5", "1"]
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in rows.values())
    assert (out / "probe.png").stat().st_size > 0
    assert "video_x0_mse" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_folder), "--out", str(out), "--sigmas", "0,1"])
    with pytest.raises(ValueError, match="num_clips"):
        denoising_probe(SkyReelsV4Pipeline.from_pretrained(tiny_folder), world=WORLD, num_clips=0)


def test_latent_frame_of_audio_tokens_follows_the_causal_video_vae():
    # 9 frames, 3 latent frames (frame 0 | frames 1-4 | frames 5-8); 9 audio tokens, one per frame.
    assert latent_frame_of_audio_tokens(9, 3, 9).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    # 18 audio tokens: two per frame.
    assert latent_frame_of_audio_tokens(18, 3, 9).tolist() == [0, 0] + [1] * 8 + [2] * 8
    assert latent_frame_of_audio_tokens(4, 1, 1).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"num_frames - 1 \(9\) must be a multiple of num_latent_frames - 1"):
        latent_frame_of_audio_tokens(9, 3, 10)
    with pytest.raises(ValueError, match="num_audio: expected a positive int, got 0"):
        latent_frame_of_audio_tokens(0, 3, 9)


@pytest.mark.parametrize("reading", ["co-timed", "everywhere", "nowhere"])
def test_audio_video_locality_is_the_share_read_from_the_co_timed_video(tiny_folder, one_thread, reading):
    """Models whose audio estimate is a known function of the video: each audio token reads only its own
    latent frame (locality 1), every latent frame equally (the uniform share), or nothing (None)."""
    pipe = SkyReelsV4Pipeline.from_pretrained(tiny_folder)
    pipe.transformer.prediction = PredictionType.X0

    def audio_from_video(module, args, out):
        video = args[0]  # [B, C, T, H, W]
        parts = list(out)
        per_frame = video.mean(dim=(1, 3, 4))  # [B, T]
        num_audio = parts[1].shape[-1]
        if reading == "co-timed":
            latent = video.shape[2]  # the tiny folder's video VAE: 4 frames per latent frame after the first
            groups = latent_frame_of_audio_tokens(num_audio, latent, 1 + 4 * (latent - 1))
            read = per_frame[:, groups]
        elif reading == "everywhere":
            read = per_frame.mean(dim=1, keepdim=True).expand(-1, num_audio)
        else:
            read = torch.zeros(video.shape[0], num_audio)
        parts[0], parts[1] = parts[0] * 0, parts[1] * 0 + read[:, None, :]
        return type(out)(*parts)

    pipe.transformer.register_forward_hook(audio_from_video)
    results = denoising_probe(pipe, world=WORLD, sigmas=(0.5,), num_clips=2, seed=5)
    row = results["0.5"]
    # 9 frames -> 3 latent frames; groups 0, 1, 2 have 2, 3, 2 latent frames within one of their own.
    assert row["audio_video_locality_uniform"] == pytest.approx(7 / 9)
    expected = {"co-timed": 1.0, "everywhere": pytest.approx(7 / 9), "nowhere": None}[reading]
    assert row["audio_video_locality"] == expected
    assert (row["audio_video_content_dependence"] > 0) == (reading != "nowhere")
    world = WorldConfig(size=32, num_frames=21, fps=16.0, sample_rate=16000, max_objects=2)
    long_row = denoising_probe(pipe, world=world, sigmas=(0.5,), num_clips=1, seed=5)["0.5"]
    # 21 frames -> 6 latent frames; groups 0..5 see 2, 3, 3, 3, 3, 2 frames within one of their own.
    uniform = (2 + 3 + 3 + 3 + 3 + 2) / 6 / 6
    assert long_row["audio_video_locality_uniform"] == pytest.approx(uniform)
    expected = {"co-timed": 1.0, "everywhere": uniform, "nowhere": None}[reading]
    if expected is None:
        assert long_row["audio_video_locality"] is None
    else:
        assert long_row["audio_video_locality"] == pytest.approx(expected, rel=1e-6)
