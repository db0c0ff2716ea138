"""Guidance and solvers of the pipeline: separate video/audio scales (checked against the guidance formula
on one Euler step), negatives, reference drop, batched == sequential, and every solver of
skyreels-flow-matching calling the model the expected number of times."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from skyreels_flow_matching import GuidanceBatching, Solver, flow_sigmas, num_model_evaluations
from skyreels_v4.model import JointDenoiser
from skyreels_v4.pipeline import GenerationRequest, SamplingConfig
from skyreels_v4.pipeline.sampling import NegativeReferences

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "@image_1 waves. <dialogue>Hi.</dialogue>"


def _request(**changes):
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return GenerationRequest(prompt=PROMPT, reference_images=(image,), seed=2, **changes)


def _count_forwards(pipe):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    return calls, handle


@pytest.mark.parametrize("solver", list(Solver))
def test_every_solver_runs_and_calls_the_model_as_planned(tiny_pipe, solver):
    sampling = SamplingConfig(solver=solver, num_steps=3, video_guidance=2.0, audio_guidance=3.0)
    calls, handle = _count_forwards(tiny_pipe)
    steps = []
    try:
        out = tiny_pipe(_request(), sampling=sampling, progress=False, callback=lambda *a: steps.append(a[0]))
    finally:
        handle.remove()
    sigmas = flow_sigmas(3, shift=sampling.shift, form=sampling.schedule)
    assert len(calls) == num_model_evaluations(solver, sigmas) and set(calls) == {2}  # batched guidance
    assert steps == [0, 1, 2]
    assert torch.isfinite(out.video_latents).all() and torch.isfinite(out.audio_latents).all()


def test_solvers_differ_and_batched_equals_sequential(tiny_pipe):
    results = {}
    for solver in (Solver.EULER, Solver.UNIPC):
        for batching in GuidanceBatching:
            sampling = SamplingConfig(solver=solver, num_steps=3, batching=batching)
            results[solver, batching] = tiny_pipe(_request(), sampling=sampling, progress=False)
    for solver in (Solver.EULER, Solver.UNIPC):
        a, b = results[solver, GuidanceBatching.BATCHED], results[solver, GuidanceBatching.SEQUENTIAL]
        torch.testing.assert_close(a.video_latents, b.video_latents, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.audio_latents, b.audio_latents, atol=1e-4, rtol=1e-4)
    euler = results[Solver.EULER, GuidanceBatching.BATCHED]
    unipc = results[Solver.UNIPC, GuidanceBatching.BATCHED]
    # The random tiny model's velocity changes little along the path, so the solvers differ only
    # slightly (but beyond float rounding, which the batched/sequential comparison above bounds).
    assert float((euler.video_latents - unipc.video_latents).abs().max()) > 5e-5


@pytest.mark.parametrize("negative_references", list(NegativeReferences))
def test_one_euler_step_is_the_per_modality_guidance_formula(tiny_pipe, negative_references):
    """x0 = noise - u after one Euler step from σ = 1, with u = u_neg + w·(u_pos - u_neg) per modality."""
    wv, wa = 2.5, 4.0
    sampling = SamplingConfig(
        num_steps=1, video_guidance=wv, audio_guidance=wa, negative_references=negative_references
    )
    request = _request(negative_prompt="blurry, silent")
    prepared = tiny_pipe.prepare(request, sampling=sampling)
    if negative_references is NegativeReferences.DROP:
        assert prepared.negative.video_reference is None and prepared.condition.video_reference is not None
    else:
        assert prepared.negative.video_reference is prepared.condition.video_reference
    video, audio = tiny_pipe.sample(prepared, sampling=sampling, progress=False)
    denoiser = JointDenoiser(tiny_pipe.transformer)
    x = (prepared.video_noise, prepared.audio_noise)
    sigma = torch.ones(1)
    with torch.no_grad():
        pos = denoiser(*x, video_sigma=sigma, audio_sigma=sigma, condition=prepared.condition)
        neg = denoiser(*x, video_sigma=sigma, audio_sigma=sigma, condition=prepared.negative)
    expect_video = x[0] - (neg[0] + wv * (pos[0] - neg[0]))
    expect_audio = x[1] - (neg[1] + wa * (pos[1] - neg[1]))
    torch.testing.assert_close(video, expect_video, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(audio, expect_audio, atol=1e-4, rtol=1e-4)


def test_negatives_and_reference_drop_change_the_result_only_when_guided(tiny_pipe):
    def run(**sampling_changes):
        sampling = SamplingConfig(num_steps=2, **sampling_changes)
        return tiny_pipe(
            _request(negative_prompt=sampling_changes.pop("_neg", "")), sampling=sampling, progress=False
        )

    keep = run(video_guidance=3.0, audio_guidance=3.0)
    drop = run(video_guidance=3.0, audio_guidance=3.0, negative_references=NegativeReferences.DROP)
    assert not torch.allclose(keep.video_latents, drop.video_latents, atol=1e-4)
    off_keep = run(video_guidance=1.0, audio_guidance=1.0)
    off_drop = run(video_guidance=1.0, audio_guidance=1.0, negative_references=NegativeReferences.DROP)
    assert torch.equal(off_keep.video_latents, off_drop.video_latents)
    negative = tiny_pipe(
        _request(negative_prompt="dark, noisy"), sampling=SamplingConfig(num_steps=2), progress=False
    )
    assert not torch.allclose(keep.video_latents, negative.video_latents, atol=1e-4)


def test_guidance_off_runs_one_forward_per_step(tiny_pipe):
    calls, handle = _count_forwards(tiny_pipe)
    try:
        tiny_pipe(
            _request(),
            sampling=SamplingConfig(num_steps=2, video_guidance=1.0, audio_guidance=1.0),
            progress=False,
        )
    finally:
        handle.remove()
    assert calls == [1, 1]


def test_sampling_config_round_trips_through_its_folder(tmp_path):
    config = SamplingConfig(
        solver=Solver.DPMPP_2M, num_steps=7, negative_references=NegativeReferences.DROP, video_guidance=6.5
    )
    config.save_pretrained(tmp_path)
    assert SamplingConfig.from_pretrained(tmp_path) == config
    assert dataclasses.replace(config, num_steps=3).num_steps == 3


def test_a_guidance_interval_guides_only_the_steps_whose_sigma_lies_inside_it(tiny_pipe):
    """Audio guided at the first step only: that step's state equals the fully guided run's, the later
    steps run one forward (no negative), and the end differs from both the guided and unguided runs."""
    sigmas = flow_sigmas(3, shift=5.0, form=SamplingConfig().schedule).tolist()
    first_only = ((sigmas[0] + sigmas[1]) / 2, 1.0)

    def run(**changes):
        settings = {"num_steps": 3, "shift": 5.0, "video_guidance": 1.0, "audio_guidance": 4.0}
        sampling = SamplingConfig(**{**settings, **changes})
        states, calls = [], []
        handle = tiny_pipe.transformer.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
        try:
            out = tiny_pipe(
                _request(),
                sampling=sampling,
                progress=False,
                callback=lambda i, s, state: states.append([t.clone() for t in state]),
            )
        finally:
            handle.remove()
        return out, states, calls

    guided, guided_states, guided_calls = run()
    interval, interval_states, interval_calls = run(audio_guidance_interval=first_only)
    unguided, unguided_states, _ = run(audio_guidance=1.0)
    assert guided_calls == [2, 2, 2] and interval_calls == [2, 1, 1]
    assert torch.equal(interval_states[0][1], guided_states[0][1])
    assert not torch.allclose(interval_states[0][1], unguided_states[0][1], atol=1e-5)
    assert not torch.allclose(interval.audio_latents, guided.audio_latents, atol=1e-5)
    assert not torch.allclose(interval.audio_latents, unguided.audio_latents, atol=1e-5)
    # The whole range is the default: bit-identical to not naming an interval.
    everywhere, _, _ = run(audio_guidance_interval=(0.0, 1.0))
    assert torch.equal(everywhere.audio_latents, guided.audio_latents)


def test_guidance_intervals_round_trip_and_bad_ones_are_refused(tmp_path):
    config = SamplingConfig(audio_guidance_interval=(0.5, 1.0), video_guidance_interval=(0.0, 0.75))
    config.save_pretrained(tmp_path)
    loaded = SamplingConfig.from_pretrained(tmp_path)
    assert loaded == config and loaded.audio_guidance_interval == (0.5, 1.0)
    assert config.guidance.audio.sigma_interval == (0.5, 1.0)
    assert config.guidance.video.sigma_interval == (0.0, 0.75)
    # A scheduler config written before the intervals existed loads with guidance at every step.
    path = tmp_path / "scheduler_config.json"
    data = json.loads(path.read_text())
    del data["audio_guidance_interval"], data["video_guidance_interval"]
    path.write_text(json.dumps(data))
    assert SamplingConfig.from_pretrained(tmp_path).audio_guidance_interval == (0.0, 1.0)
    for bad in ((0.6, 0.4), (-0.1, 1.0), (0.0, 1.5), (0.0,), (0.0, 0.5, 1.0), (True, 1.0), [0.0, 1.0]):
        with pytest.raises(ValueError, match="audio_guidance_interval"):
            SamplingConfig(audio_guidance_interval=bad)
    with pytest.raises(ValueError, match="video_guidance_interval"):
        SamplingConfig(video_guidance_interval=(0.0, float("nan")))
