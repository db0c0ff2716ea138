"""Per-modality classifier-free guidance: values, batching, rescale, interval, condition batching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch

from skyreels_flow_matching import (
    GuidanceBatching,
    JointGuidanceConfig,
    JointGuidedDenoiser,
    ModalityGuidanceConfig,
    classifier_free_guidance,
    concat_conditions,
    flow_sigmas,
    reference_guided_velocity,
    rescale_guidance,
    sample_euler,
)


def _config(video=None, audio=None, batching=GuidanceBatching.BATCHED):
    return JointGuidanceConfig(
        video=video or ModalityGuidanceConfig(),
        audio=audio or ModalityGuidanceConfig(),
        batching=batching,
    )


def _raw(model, video, audio, sigma, condition):
    return model(video, audio, video_sigma=sigma, audio_sigma=sigma, condition=condition)


SIGMA = torch.tensor([0.6, 0.6])


def test_scale_one_is_the_conditional_prediction_with_one_forward(joint_model, joint_inputs):
    video, audio, condition, _, _ = joint_inputs
    denoiser = JointGuidedDenoiser(joint_model, condition=condition)
    video_u, audio_u = denoiser((video, audio), SIGMA)
    expected = _raw(joint_model, video, audio, SIGMA, condition)
    assert torch.equal(video_u, expected[0])
    assert torch.equal(audio_u, expected[1])
    assert joint_model.batch_sizes == [2, 2]  # one guided call + the reference call


def test_separate_scales_and_negatives(joint_model, joint_inputs):
    video, audio, condition, video_negative, audio_negative = joint_inputs
    config = _config(ModalityGuidanceConfig(scale=5.0), ModalityGuidanceConfig(scale=2.5))
    denoiser = JointGuidedDenoiser(
        joint_model,
        condition=condition,
        video_negative_condition=video_negative,
        audio_negative_condition=audio_negative,
        config=config,
    )
    video_u, audio_u = denoiser((video, audio), SIGMA)
    assert joint_model.batch_sizes == [6]  # cond + two different negatives in one batch
    cond = _raw(joint_model, video, audio, SIGMA, condition)
    v_neg = _raw(joint_model, video, audio, SIGMA, video_negative)
    a_neg = _raw(joint_model, video, audio, SIGMA, audio_negative)
    torch.testing.assert_close(video_u, v_neg[0] + 5.0 * (cond[0] - v_neg[0]), rtol=0, atol=0)
    torch.testing.assert_close(audio_u, a_neg[1] + 2.5 * (cond[1] - a_neg[1]), rtol=0, atol=0)
    assert not torch.allclose(video_u, cond[0])


def test_shared_negative_costs_one_branch_and_unguided_modality_is_conditional(joint_model, joint_inputs):
    video, audio, condition, negative, _ = joint_inputs
    shared = JointGuidedDenoiser(
        joint_model,
        condition=condition,
        video_negative_condition=negative,
        audio_negative_condition=negative,
        config=_config(ModalityGuidanceConfig(scale=4.0), ModalityGuidanceConfig(scale=3.0)),
    )
    shared((video, audio), SIGMA)
    assert joint_model.batch_sizes == [4]
    joint_model.batch_sizes.clear()
    video_only = JointGuidedDenoiser(
        joint_model,
        condition=condition,
        video_negative_condition=negative,
        config=_config(ModalityGuidanceConfig(scale=4.0)),
    )
    video_u, audio_u = video_only((video, audio), SIGMA)
    assert joint_model.batch_sizes == [4]
    cond = _raw(joint_model, video, audio, SIGMA, condition)
    assert torch.equal(audio_u, cond[1])
    assert not torch.equal(video_u, cond[0])


@pytest.mark.parametrize(
    "config",
    [
        _config(ModalityGuidanceConfig(scale=5.0), ModalityGuidanceConfig(scale=2.0)),
        _config(ModalityGuidanceConfig(scale=5.0, rescale=0.7), ModalityGuidanceConfig(scale=0.0)),
        _config(
            ModalityGuidanceConfig(scale=6.0, sigma_interval=(0.5, 1.0)),
            ModalityGuidanceConfig(scale=3.0, sigma_interval=(0.0, 0.55)),
        ),
    ],
    ids=["plain", "rescale", "interval"],
)
def test_batched_equals_sequential_exactly(joint_model, joint_inputs, config):
    video, audio, condition, video_negative, audio_negative = joint_inputs
    sigma = torch.tensor([0.9, 0.52])
    outputs = {}
    for batching in GuidanceBatching:
        denoiser = JointGuidedDenoiser(
            joint_model,
            condition=condition,
            video_negative_condition=video_negative,
            audio_negative_condition=audio_negative,
            config=_config(config.video, config.audio, batching),
        )
        outputs[batching] = denoiser((video, audio), sigma)
    batched, sequential = outputs[GuidanceBatching.BATCHED], outputs[GuidanceBatching.SEQUENTIAL]
    assert torch.equal(batched[0], sequential[0])
    assert torch.equal(batched[1], sequential[1])


def test_sequential_runs_one_forward_per_branch(joint_model, joint_inputs):
    video, audio, condition, video_negative, audio_negative = joint_inputs
    denoiser = JointGuidedDenoiser(
        joint_model,
        condition=condition,
        video_negative_condition=video_negative,
        audio_negative_condition=audio_negative,
        config=_config(
            ModalityGuidanceConfig(scale=2.0), ModalityGuidanceConfig(scale=2.0), GuidanceBatching.SEQUENTIAL
        ),
    )
    denoiser((video, audio), SIGMA)
    assert joint_model.batch_sizes == [2, 2, 2]


def test_rescale_zero_is_plain_cfg_and_positive_matches_the_reference(joint_model, joint_inputs):
    video, audio, condition, negative, _ = joint_inputs
    cond = _raw(joint_model, video, audio, SIGMA, condition)
    neg = _raw(joint_model, video, audio, SIGMA, negative)
    for rescale in (0.0, 0.7, 1.0):
        denoiser = JointGuidedDenoiser(
            joint_model,
            condition=condition,
            video_negative_condition=negative,
            audio_negative_condition=negative,
            config=_config(
                ModalityGuidanceConfig(scale=7.0, rescale=rescale),
                ModalityGuidanceConfig(scale=3.0, rescale=rescale),
            ),
        )
        video_u, audio_u = denoiser((video, audio), SIGMA)
        if rescale == 0.0:
            assert torch.equal(video_u, classifier_free_guidance(cond[0], neg[0], 7.0))
            assert torch.equal(audio_u, classifier_free_guidance(cond[1], neg[1], 3.0))
        torch.testing.assert_close(
            video_u.double(), reference_guided_velocity(cond[0], neg[0], 7.0, rescale), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            audio_u.double(), reference_guided_velocity(cond[1], neg[1], 3.0, rescale), rtol=1e-5, atol=1e-6
        )
    # φ = 1 restores the conditional per-sample std exactly
    full = rescale_guidance(classifier_free_guidance(cond[0], neg[0], 7.0), cond[0], 1.0)
    torch.testing.assert_close(full.flatten(1).std(dim=1), cond[0].flatten(1).std(dim=1))


def test_interval_switches_guidance_off_outside(joint_model, joint_inputs):
    video, audio, condition, negative, _ = joint_inputs
    config = _config(ModalityGuidanceConfig(scale=5.0, sigma_interval=(0.2, 0.8)))
    denoiser = JointGuidedDenoiser(
        joint_model, condition=condition, video_negative_condition=negative, config=config
    )
    for sigma_value, guided in ((0.95, False), (0.8, True), (0.5, True), (0.2, True), (0.1, False)):
        joint_model.batch_sizes.clear()
        sigma = torch.full((2,), sigma_value)
        video_u, _ = denoiser((video, audio), sigma)
        cond = _raw(joint_model, video, audio, sigma, condition)
        assert torch.equal(video_u, cond[0]) is not guided
        assert joint_model.batch_sizes[0] == (4 if guided else 2)  # negative forward skipped outside
    # per sample: the first sample is inside, the second outside
    sigma = torch.tensor([0.5, 0.9])
    video_u, _ = denoiser((video, audio), sigma)
    cond = _raw(joint_model, video, audio, sigma, condition)
    neg = _raw(joint_model, video, audio, sigma, negative)
    assert torch.equal(video_u[1], cond[0][1])
    assert torch.equal(video_u[0], classifier_free_guidance(cond[0], neg[0], 5.0)[0])


def test_the_wrapper_drives_a_solver(joint_model, joint_inputs):
    video, audio, condition, negative, _ = joint_inputs
    denoiser = JointGuidedDenoiser(
        joint_model,
        condition=condition,
        video_negative_condition=negative,
        audio_negative_condition=negative,
        config=_config(ModalityGuidanceConfig(scale=3.0), ModalityGuidanceConfig(scale=2.0)),
    )
    sigmas = flow_sigmas(4, shift=3.0)
    video_out, audio_out = sample_euler(denoiser, (video, audio), sigmas)
    x = (video, audio)
    for i in range(4):
        u = denoiser(x, torch.full((2,), sigmas[i].item()))
        dt = (sigmas[i + 1] - sigmas[i]).item()
        x = (x[0] + dt * u[0], x[1] + dt * u[1])
    assert torch.equal(video_out, x[0])
    assert torch.equal(audio_out, x[1])


@dataclass(frozen=True)
class TextCondition:
    tokens: torch.Tensor
    mask: torch.Tensor | None
    name: str


class Pair(NamedTuple):
    first: torch.Tensor
    second: list


def test_concat_conditions_handles_nested_structures():
    a = {
        "text": TextCondition(tokens=torch.ones(2, 3, 4), mask=None, name="t5"),
        "pair": Pair(torch.zeros(2, 1), [torch.ones(2), 3]),
    }
    b = {
        "text": TextCondition(tokens=torch.zeros(1, 3, 4), mask=None, name="t5"),
        "pair": Pair(torch.ones(1, 1), [torch.zeros(1), 3]),
    }
    joined = concat_conditions([a, b])
    assert isinstance(joined["text"], TextCondition)
    assert torch.equal(joined["text"].tokens, torch.cat([torch.ones(2, 3, 4), torch.zeros(1, 3, 4)]))
    assert joined["text"].mask is None
    assert joined["text"].name == "t5"
    assert isinstance(joined["pair"], Pair)
    assert torch.equal(joined["pair"].first, torch.tensor([[0.0], [0.0], [1.0]]))
    assert torch.equal(joined["pair"].second[0], torch.tensor([1.0, 1.0, 0.0]))
    assert joined["pair"].second[1] == 3
    assert torch.equal(concat_conditions([torch.ones(1, 2)]), torch.ones(1, 2))


@pytest.mark.parametrize(
    ("conditions", "error", "match"),
    [
        (
            [{"t": torch.ones(1, 3)}, {"t": torch.ones(1, 4)}],
            ValueError,
            r"condition\['t'\] must have a batch dim",
        ),
        ([{"t": torch.ones(1)}, {"u": torch.ones(1)}], ValueError, "must have the same keys"),
        ([{"t": None}, {"t": torch.ones(1)}], TypeError, r"condition\['t'\] is None in one condition"),
        ([{"g": 1.0}, {"g": 2.0}], ValueError, "must be equal in every condition"),
        ([torch.ones(()), torch.ones(())], ValueError, "must have a batch dim first"),
        ([], ValueError, "conditions must be a non-empty sequence"),
    ],
)
def test_concat_conditions_errors(conditions, error, match):
    with pytest.raises(error, match=match):
        concat_conditions(conditions)


def test_batched_guidance_with_unbatchable_conditions_says_what_to_do(joint_model, joint_inputs):
    video, audio, condition, _, _ = joint_inputs
    long_negative = {"text": torch.zeros(2, 2), "gain": 0.5}
    denoiser = JointGuidedDenoiser(
        joint_model,
        condition=condition,
        video_negative_condition=long_negative,
        config=_config(ModalityGuidanceConfig(scale=2.0)),
    )
    with pytest.raises(ValueError, match="use sequential guidance"):
        denoiser((video, audio), SIGMA)


def test_bad_inputs_raise(joint_model, joint_inputs):
    video, audio, condition, _, _ = joint_inputs
    with pytest.raises(
        ValueError, match=r"video_negative_condition is required when its guidance scale is 3\.0"
    ):
        JointGuidedDenoiser(
            joint_model, condition=condition, config=_config(ModalityGuidanceConfig(scale=3.0))
        )
    with pytest.raises(ValueError, match="audio_negative_condition is required"):
        JointGuidedDenoiser(
            joint_model, condition=condition, config=_config(audio=ModalityGuidanceConfig(scale=0.0))
        )
    with pytest.raises(ValueError, match=r"rescale must be a float in \[0, 1\]"):
        ModalityGuidanceConfig(rescale=1.5)
    with pytest.raises(ValueError, match="sigma_interval must be a tuple"):
        ModalityGuidanceConfig(sigma_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="sigma_interval must be a tuple"):
        ModalityGuidanceConfig(sigma_interval=[0.0, 1.0])
    with pytest.raises(ValueError, match="scale must be a finite float"):
        ModalityGuidanceConfig(scale=float("inf"))
    with pytest.raises(TypeError, match="batching must be a GuidanceBatching"):
        JointGuidanceConfig(batching="batched")
    with pytest.raises(TypeError, match="config must be a JointGuidanceConfig"):
        JointGuidedDenoiser(joint_model, condition=condition, config=ModalityGuidanceConfig())
    denoiser = JointGuidedDenoiser(joint_model, condition=condition)
    with pytest.raises(TypeError, match=r"x must be a tuple \(video_latents, audio_latents\)"):
        denoiser(video, SIGMA)
    with pytest.raises(ValueError, match=r"sigma must have shape \[B\]"):
        denoiser((video, audio), torch.ones(3))
    broken = JointGuidedDenoiser(lambda v, a, **kw: (v[:, :1], a), condition=condition)
    with pytest.raises(ValueError, match=r"model must return \(video_velocity \[2, 3, 2, 4, 4\]"):
        broken((video, audio), SIGMA)
