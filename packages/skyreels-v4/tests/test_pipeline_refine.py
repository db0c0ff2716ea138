"""The efficient path of paper 4.5 in the pipeline: base pass at low resolution, refiner to ``refine_to``.

Checked on the tiny pipeline with a refiner initialised from its video branch (random new weights, so
that the refiner's output depends on every input): output sizes and rates, the refiner reads the base
output (its U channels are exactly the interpolated base latents), high-res keyframes are kept, the
folder round-trips, and impossible requests raise typed errors naming ``refine_to``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from skyreels_refiner_vsa import VSAConfig, upsample_latents
from skyreels_v4.errors import SkyReelsError
from skyreels_v4.pipeline import GenerationRequest, SkyReelsV4Pipeline
from skyreels_v4.pipeline.refine import RefineConfig, RefinerComponent

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "A red circle bounces. <sfx>A blip.</sfx>"
HI = (64, 64)


def _refiner(pipe, *, frame_factor: int = 1, guidance: float = 1.0) -> RefinerComponent:
    torch.manual_seed(1)
    component = RefinerComponent.from_base(
        pipe.transformer,
        vsa=VSAConfig(sparsity=0.5, backend="torch"),
        config=RefineConfig(num_steps=2, frame_factor=frame_factor, guidance=guidance),
    )
    with torch.no_grad():  # the new U columns and VSA gates start at zero: give them values
        for parameter in component.refiner.parameters():
            if not bool(parameter.any()):
                parameter.normal_(0.0, 0.05)
    return component


@pytest.fixture
def refined_pipe(tiny_pipeline_factory):
    pipe = tiny_pipeline_factory()
    pipe.refiner = _refiner(pipe)
    return pipe


def _pixels(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_refined_output_sizes_and_the_refiner_reads_the_base_output(refined_pipe, monkeypatch):
    pipe = refined_pipe
    seen = []
    forward = type(pipe.refiner.refiner).forward

    def spy(self, refiner_input, **kwargs):
        seen.append(refiner_input.detach().clone())
        return forward(self, refiner_input, **kwargs)

    monkeypatch.setattr(type(pipe.refiner.refiner), "forward", spy)
    out = pipe(PROMPT, task="t2av", seed=2, refine_to=HI, progress=False)
    base = pipe(PROMPT, task="t2av", seed=2, progress=False)
    assert out.video.shape == (3, 9, *HI) and out.fps == 16.0
    assert out.audio.shape == base.audio.shape
    # The base pass is the plain generation at the low size; its audio is kept.
    assert torch.equal(out.base_video_latents, base.video_latents)
    assert torch.equal(out.audio_latents, base.audio_latents)
    c = base.video_latents.shape[1]
    grid = out.video_latents.shape[2:]
    assert tuple(grid) == (3, HI[0] // 4, HI[1] // 4)
    assert len(seen) == 2  # two refiner steps, no guidance
    upsampled = upsample_latents(base.video_latents, tuple(grid))
    for refiner_input in seen:
        assert refiner_input.shape[1] == 3 * c + 1
        assert torch.equal(refiner_input[:, 2 * c + 1 :], upsampled)  # U = the base output, interpolated
        assert not bool(refiner_input[:, 2 * c].any())  # t2av: no high-res condition (M = 0)
    # The refined latents are the refiner's: not the interpolation, and the decoded frames are theirs.
    assert (out.video_latents - upsampled).abs().max() > 1e-3
    assert torch.allclose(out.video, pipe.video_vae.decode(out.video_latents)[0].clamp(-1, 1))


def test_frame_interpolation_doubles_the_rate_and_writes_a_playable_mp4(
    tiny_pipeline_factory, tmp_path, mp4_probe
):
    pipe = tiny_pipeline_factory()
    pipe.refiner = _refiner(pipe, frame_factor=2, guidance=2.0)
    out = pipe(PROMPT, task="t2av", seed=0, refine_to=HI, progress=False)
    assert out.video.shape == (3, 17, *HI) and out.fps == 32.0
    assert out.video_latents.shape[2] == 2 * out.base_video_latents.shape[2] - 1
    assert out.audio.shape[1] == round(17 / 32 * pipe.audio_vae.sample_rate)
    info = mp4_probe(out.save(tmp_path / "refined.mp4"))
    assert info["frames"] == 17 and tuple(info["size"]) == HI and info["has_audio"]
    assert info["fps"] == pytest.approx(32.0) and info["audio_rate"] == pipe.audio_vae.sample_rate


def test_high_res_conditions_are_kept_exactly(refined_pipe):
    pipe = refined_pipe
    image = _pixels(3, *HI, seed=3)
    out = pipe(PROMPT, task="i2v", image=image, refine_to=HI, seed=1, progress=False)
    encoded = pipe.video_vae.encode(image[None, :, None])
    assert torch.equal(out.video_latents[:, :, :1], encoded)  # the high-res first frame, not upsampled
    # The base pass saw the image at its own size.
    small = torch.nn.functional.interpolate(image[None], size=(32, 32), mode="bilinear", antialias=True)
    assert torch.allclose(
        out.base_video_latents[:, :, :1], pipe.video_vae.encode(small[:, :, None]), atol=1e-5
    )

    video = _pixels(3, 9, *HI, seed=4)
    mask = torch.zeros(HI, dtype=torch.bool)
    mask[:, :32] = True
    edit = pipe(PROMPT, task="edit", video=video, edit_mask=mask, refine_to=HI, progress=False)
    kept = pipe.video_vae.encode(video[None])[..., :8]
    assert torch.equal(edit.video_latents[..., :8], kept)
    assert edit.video.shape == (3, 9, *HI)


def test_the_refiner_round_trips_through_the_model_folder(refined_pipe, tmp_path):
    pipe = refined_pipe
    folder = pipe.save_pretrained(tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["refiner"] == ["skyreels_v4.pipeline", "RefinerComponent"]
    loaded = SkyReelsV4Pipeline.from_pretrained(folder)
    assert loaded.refiner.config == pipe.refiner.config
    assert loaded.refiner.refiner.config == pipe.refiner.refiner.config
    a = pipe(PROMPT, task="t2v", seed=5, refine_to=HI, progress=False)
    b = loaded(PROMPT, task="t2v", seed=5, refine_to=HI, progress=False)
    assert torch.equal(a.video, b.video)
    # A folder without a refiner loads with refiner None; refine_to then names the missing component.
    plain = SkyReelsV4Pipeline(
        transformer=pipe.transformer,
        video_vae=pipe.video_vae,
        audio_vae=pipe.audio_vae,
        text_encoder=pipe.text_encoder,
        sampling=pipe.sampling,
        defaults=pipe.defaults,
    )
    other = SkyReelsV4Pipeline.from_pretrained(plain.save_pretrained(tmp_path / "plain"))
    assert other.refiner is None
    assert json.loads((tmp_path / "plain" / "model_index.json").read_text())["refiner"] == [None, None]
    with pytest.raises(SkyReelsError, match=r"refiner: this pipeline has no refiner.*refine_to"):
        other(PROMPT, task="t2v", refine_to=HI, progress=False)


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        (dict(refine_to=(60, 64)), SkyReelsError, r"refine_to: expected multiples of 8"),
        (dict(refine_to=(16, 64)), SkyReelsError, r"refine_to: expected a size at least the base size 32x32"),
        (dict(refine_to=(64,)), SkyReelsError, r"refine_to: expected \(height, width\)"),
        (dict(refine_to=(64, 0)), SkyReelsError, r"refine_to: expected \(height, width\)"),
        (dict(refine_to="64x64"), SkyReelsError, r"refine_to: expected \(height, width\)"),
        (dict(task="t2a", refine_to=HI), SkyReelsError, r"refine_to: task 't2a' generates no video"),
        (
            dict(task="v2a", video=_pixels(3, 9, *HI, seed=0), refine_to=HI),
            SkyReelsError,
            r"refine_to: task 'v2a' generates no video",
        ),
        (
            dict(task="i2v", image=_pixels(3, 32, 32, seed=0), refine_to=HI),
            SkyReelsError,
            r"image: with refine_to the inputs have the output size \(64, 64\), got \(32, 32\)",
        ),
    ],
)
def test_impossible_refinements_raise_typed_errors(refined_pipe, fields, error, message):
    with pytest.raises(error, match=message):
        refined_pipe(GenerationRequest(prompt=PROMPT, **fields), progress=False)


def test_prepare_refuses_refine_to_and_source_tasks_need_frame_factor_1(refined_pipe, tiny_pipeline_factory):
    with pytest.raises(SkyReelsError, match="refine_to: prepare"):
        refined_pipe.prepare(GenerationRequest(prompt=PROMPT, refine_to=HI))
    pipe = tiny_pipeline_factory()
    pipe.refiner = _refiner(pipe, frame_factor=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SkyReelsError, match="refine_to: task 'extend' keeps"):
            pipe(PROMPT, task="extend", video=_pixels(3, 5, *HI, seed=0), num_frames=9, refine_to=HI)
    with pytest.raises(TypeError, match="refiner: expected a RefinerComponent"):
        SkyReelsV4Pipeline(
            transformer=pipe.transformer,
            video_vae=pipe.video_vae,
            audio_vae=pipe.audio_vae,
            text_encoder=pipe.text_encoder,
            refiner=pipe.refiner.refiner,
        )
    with pytest.raises(ValueError, match="frame_factor: expected an int in"):
        RefineConfig(frame_factor=0)


def test_cli_refine_writes_the_refined_size_and_names_bad_values(refined_pipe, tmp_path, mp4_probe, capsys):
    from skyreels_v4.pipeline.cli import main

    folder = str(refined_pipe.save_pretrained(tmp_path / "model"))
    out = tmp_path / "clip.mp4"
    code = main(["--model", folder, "--prompt", PROMPT, "--refine", "64x64", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    info = mp4_probe(out)
    assert tuple(info["size"]) == HI and info["frames"] == 9 and info["has_audio"]
    for value, message in (
        ("64", "--refine: expected HEIGHTxWIDTH"),
        ("60x64", "--refine: expected multiples"),
    ):
        bad = tmp_path / f"bad{value}.mp4"
        assert main(["--model", folder, "--prompt", PROMPT, "--refine", value, "--out", str(bad)]) == 2
        assert message in capsys.readouterr().err and not bad.exists()


def test_long_clips_refine_every_window_and_extend_the_refined_frames(refined_pipe, tiny_pipeline_factory):
    pipe = refined_pipe
    request = GenerationRequest(prompt=PROMPT, task="t2av", seed=3, refine_to=HI)
    clip = pipe.generate_long(request, total_frames=13, window_frames=9, overlap_frames=5, progress=False)
    first, second = clip.windows
    assert clip.output.video.shape == (3, 13, *HI)
    assert first.video.shape == second.video.shape == (3, 9, *HI)
    assert first.base_video_latents.shape[-2:] == (8, 8) and first.video_latents.shape[-2:] == (16, 16)
    # The second window extends the refined frames: its refiner kept their high-res latents exactly.
    kept = pipe.video_vae.encode(first.video[None, :, 4:])
    assert torch.equal(second.video_latents[:, :, :2], kept)
    assert torch.equal(clip.output.video, torch.cat([first.video, second.video[:, 5:]], dim=1))
    assert clip.output.audio.shape[1] == round(13 / 16 * pipe.audio_vae.sample_rate)
    other = tiny_pipeline_factory()
    other.refiner = _refiner(other, frame_factor=2)
    with pytest.raises(SkyReelsError, match="refine_to: long generation extends the refined frames"):
        other.generate_long(request, total_frames=13, window_frames=9, overlap_frames=5, progress=False)


def _spy_refiner_inputs(pipe, monkeypatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    forward = type(pipe.refiner.refiner).forward

    def spy(self, refiner_input, **kwargs):
        seen.append(refiner_input.detach().clone())
        return forward(self, refiner_input, **kwargs)

    monkeypatch.setattr(type(pipe.refiner.refiner), "forward", spy)
    return seen


@pytest.mark.parametrize(("task", "frame_factor"), [("t2av", 1), ("t2v", 2)])
def test_joint_keyframes_replace_the_interpolated_frames(
    tiny_pipeline_factory, monkeypatch, task, frame_factor
):
    pipe = tiny_pipeline_factory()
    pipe.refiner = _refiner(pipe, frame_factor=frame_factor)
    seen = _spy_refiner_inputs(pipe, monkeypatch)
    out = pipe(PROMPT, task=task, seed=2, refine_to=HI, keyframes=(0, 2), progress=False)
    c = out.base_video_latents.shape[1]
    assert out.keyframe_latents.shape == (1, c, 2, HI[0] // 4, HI[1] // 4)
    assert out.base_video_latents.shape[2:] == (3, 8, 8)
    # U (the last C channels of the refiner's input) holds the keyframes at their refined frames.
    for refiner_input in seen:
        u = refiner_input[:, 2 * c + 1 :]
        assert torch.equal(u[:, :, [0, 2 * frame_factor]], out.keyframe_latents)
    # The keyframes were denoised with the clip: not their initial noise, and they change the clip.
    noise = torch.randn(out.keyframe_latents.shape, generator=torch.Generator().manual_seed(4))
    assert (out.keyframe_latents - noise).abs().max() > 1e-2
    plain = pipe(PROMPT, task=task, seed=2, refine_to=HI, progress=False)
    assert plain.keyframe_latents is None
    assert (plain.base_video_latents - out.base_video_latents).abs().max() > 1e-5
    again = pipe(PROMPT, task=task, seed=2, refine_to=HI, keyframes=(0, 2), progress=False)
    assert torch.equal(again.video_latents, out.video_latents)


def test_keyframe_requests_that_cannot_be_done_are_named(refined_pipe, tmp_path, capsys):
    with pytest.raises(SkyReelsError, match="keyframes: high-res keyframes are generated for the refiner"):
        GenerationRequest(prompt=PROMPT, keyframes=(0,))
    with pytest.raises(SkyReelsError, match="keyframes: expected distinct latent frame indices"):
        GenerationRequest(prompt=PROMPT, refine_to=HI, keyframes=(1, 1))
    with pytest.raises(
        SkyReelsError,
        match=r"keyframes: expected latent frames in \[0, 3\) \(the base clip has 3 latent frames\)",
    ):
        refined_pipe(PROMPT, refine_to=HI, keyframes=(3,), progress=False)
    from skyreels_v4.pipeline.cli import main

    folder = refined_pipe.save_pretrained(tmp_path / "model")
    code = main(
        ["--model", str(folder), "--prompt", PROMPT, "--refine", "64x64", "--keyframes", "0,x",
         "--out", str(tmp_path / "a.mp4")]
    )  # fmt: skip
    assert code == 2 and "--keyframes: expected latent frame indices" in capsys.readouterr().err
    code = main(
        ["--model", str(folder), "--prompt", PROMPT, "--refine", "64x64", "--keyframes", "0,1",
         "--steps", "1", "--out", str(tmp_path / "b.mp4"), "--quiet"]
    )  # fmt: skip
    assert code == 0 and (tmp_path / "b.mp4").exists()
