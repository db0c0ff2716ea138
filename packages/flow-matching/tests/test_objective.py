"""The joint loss of eq. 6: hand-computed values, masks, weights, noising, timestep sharing."""

from __future__ import annotations

import pytest
import torch

from skyreels_flow_matching import (
    JointFlowMatching,
    JointFlowMatchingConfig,
    ShiftConfig,
    ShiftRule,
    TimestepSamplerConfig,
    TimestepSharing,
    joint_flow_matching_loss,
    loss_mask_from_condition_mask,
    masked_mse,
    noise_latents,
    reference_masked_mse,
    sample_training_sigmas,
    velocity_to_paper_velocity,
)


def test_hand_computed_joint_loss():
    # video [B=1, C=2, T=1, H=1, W=2]: squared errors c0: 1, 4; c1: 9, 16
    video_prediction = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 2, 1, 1, 2)
    video_target = torch.zeros(1, 2, 1, 1, 2)
    video_mask = torch.tensor([1.0, 0.0]).view(1, 1, 1, 1, 2)  # count W=0 in both channels: (1 + 9) / 2
    # audio [B=1, C=1, L=3]: squared errors 1, 1, 4 -> masked [1, 0, 1]: (1 + 4) / 2
    audio_prediction = torch.tensor([[[1.0, 1.0, 0.0]]])
    audio_target = torch.tensor([[[0.0, 0.0, 2.0]]])
    audio_mask = torch.tensor([[[True, False, True]]])
    loss = joint_flow_matching_loss(
        video_prediction=video_prediction,
        audio_prediction=audio_prediction,
        video_target=video_target,
        audio_target=audio_target,
        video_loss_mask=video_mask,
        audio_loss_mask=audio_mask,
        video_weight=2.0,
        audio_weight=0.5,
    )
    assert loss.video.item() == 5.0
    assert loss.audio.item() == 2.5
    assert loss.total.item() == 2.0 * 5.0 + 0.5 * 2.5
    unmasked = joint_flow_matching_loss(
        video_prediction=video_prediction,
        audio_prediction=audio_prediction,
        video_target=video_target,
        audio_target=audio_target,
    )
    assert unmasked.video.item() == 7.5  # (1 + 4 + 9 + 16) / 4
    assert unmasked.audio.item() == 2.0  # (1 + 1 + 4) / 3
    assert unmasked.total.item() == 9.5  # eq. 6: unit weights


@pytest.mark.parametrize("mask_shape", [(2, 1, 3, 4, 5), (2, 6, 3, 4, 5), (1, 1, 3, 1, 1), (2, 1, 1, 1, 1)])
def test_masked_mse_matches_reference(mask_shape):
    g = torch.Generator().manual_seed(1)
    prediction = torch.randn(2, 6, 3, 4, 5, generator=g)
    target = torch.randn(2, 6, 3, 4, 5, generator=g)
    mask = (torch.rand(mask_shape, generator=g) > 0.4).float()
    ours = masked_mse(prediction, target, mask)
    reference = reference_masked_mse(prediction, target, mask)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        masked_mse(prediction, target).double(), reference_masked_mse(prediction, target, None)
    )


def test_mask_excludes_exactly_the_masked_tokens():
    """Conditioned frames (t=0), a reference frame (t=1) and padding (w=4) do not count; the rest does."""
    g = torch.Generator().manual_seed(2)
    prediction = torch.randn(1, 2, 4, 3, 5, generator=g, requires_grad=True)
    target = torch.randn(1, 2, 4, 3, 5, generator=g)
    condition_mask = torch.zeros(1, 1, 4, 3, 5)
    condition_mask[:, :, :2] = 1  # first-frame condition + prepended reference
    valid_mask = torch.ones(1, 1, 4, 3, 5)
    valid_mask[..., 4] = 0  # padding column
    loss_mask = loss_mask_from_condition_mask(condition_mask, valid_mask=valid_mask)
    loss = masked_mse(prediction, target, loss_mask)
    (grad,) = torch.autograd.grad(loss, prediction)
    counted = loss_mask.expand_as(prediction).bool()
    assert bool((grad[~counted] == 0).all())
    assert bool((grad[counted] != 0).all())
    # mean over the 2 channels x 2 frames x 3 x 4 counted elements
    expected = (prediction - target)[:, :, 2:, :, :4].square().mean()
    torch.testing.assert_close(loss, expected)
    # changing excluded tokens changes nothing
    perturbed = prediction.detach().clone()
    perturbed[~counted] += 100.0
    assert masked_mse(perturbed, target, loss_mask).item() == loss.item()


def test_all_ones_mask_equals_no_mask_and_empty_mask_is_zero():
    g = torch.Generator().manual_seed(3)
    prediction, target = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    torch.testing.assert_close(
        masked_mse(prediction, target, torch.ones(2, 1, 7)), masked_mse(prediction, target)
    )
    assert masked_mse(prediction, target, torch.zeros(2, 1, 7)).item() == 0.0


def test_paper_convention_gives_the_same_loss():
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    noised = noise_latents(x0, torch.tensor([0.2, 0.7]), noise=noise)
    u_pred = torch.randn(2, 3, 4, generator=g)
    ours = masked_mse(u_pred, noised.target)
    paper = (velocity_to_paper_velocity(u_pred) - (x0 - noise)).square().mean()  # eq. 6, video term
    torch.testing.assert_close(ours, paper)


def test_noise_latents_builds_consistent_inputs_and_targets():
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(3, 2, 4, generator=g)
    sigma = torch.tensor([0.0, 0.5, 1.0])
    noised = noise_latents(x0, sigma, generator=torch.Generator().manual_seed(9))
    noise = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(noised.noisy, (1 - sigma.view(3, 1, 1)) * x0 + sigma.view(3, 1, 1) * noise)
    assert torch.equal(noised.target, noise - x0)
    assert torch.equal(noised.noisy[0], x0[0])
    assert torch.equal(noised.noisy[2], noise[2])


def _latents():
    g = torch.Generator().manual_seed(6)
    return torch.randn(4, 2, 3, 4, 4, generator=g), torch.randn(4, 3, 11, generator=g)


def test_shared_timestep_is_the_default_and_deterministic():
    video, audio = _latents()
    objective = JointFlowMatching(JointFlowMatchingConfig())
    noised = objective.noise(video, audio, generator=torch.Generator().manual_seed(0))
    assert noised.video.sigma is noised.audio.sigma
    expected = sample_training_sigmas(4, TimestepSamplerConfig(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(noised.video.sigma, expected)
    again = objective.noise(video, audio, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.video.noisy, noised.video.noisy)
    assert torch.equal(again.audio.noisy, noised.audio.noisy)
    # x0 is recoverable from the stored input and target: x0 = x_σ - σ·u
    torch.testing.assert_close(
        noised.video.noisy - noised.video.sigma.view(4, 1, 1, 1, 1) * noised.video.target, video
    )


def test_independent_timesteps_use_each_modality_token_count():
    video, audio = _latents()
    sampler = TimestepSamplerConfig(
        shift=ShiftConfig(rule=ShiftRule.TOKEN_SQRT, shift=2.0, base_num_tokens=100)
    )
    config = JointFlowMatchingConfig(sampler=sampler, timestep_sharing=TimestepSharing.INDEPENDENT)
    objective = JointFlowMatching(config)
    video_sigma, audio_sigma = objective.sample_sigmas(
        4, generator=torch.Generator().manual_seed(1), video_num_tokens=400, audio_num_tokens=25
    )
    g = torch.Generator().manual_seed(1)
    expected_video = sample_training_sigmas(4, sampler, generator=g, num_tokens=400)
    expected_audio = sample_training_sigmas(4, sampler, generator=g, num_tokens=25)
    assert torch.equal(video_sigma, expected_video)
    assert torch.equal(audio_sigma, expected_audio)
    assert not torch.equal(video_sigma, audio_sigma)
    noised = objective.noise(
        video, audio, generator=torch.Generator().manual_seed(1), video_num_tokens=400, audio_num_tokens=25
    )
    assert torch.equal(noised.video.sigma, expected_video)
    assert torch.equal(noised.audio.sigma, expected_audio)


def test_weights_and_loss_through_the_objective():
    video, audio = _latents()
    objective = JointFlowMatching(JointFlowMatchingConfig(video_weight=0.25, audio_weight=3.0))
    noised = objective.noise(video, audio, generator=torch.Generator().manual_seed(2))
    video_pred, audio_pred = torch.zeros_like(video), torch.ones_like(audio)
    mask = torch.ones(4, 1, 3, 4, 4)
    mask[:, :, 0] = 0
    loss = objective.loss(video_pred, audio_pred, noised, video_loss_mask=mask)
    expected_video = noised.video.target[:, :, 1:].square().mean()
    expected_audio = (1.0 - noised.audio.target).square().mean()
    torch.testing.assert_close(loss.video, expected_video)
    torch.testing.assert_close(loss.audio, expected_audio)
    torch.testing.assert_close(loss.total, 0.25 * expected_video + 3.0 * expected_audio)


def test_single_modality_batches():
    video, audio = _latents()
    objective = JointFlowMatching(JointFlowMatchingConfig(video_weight=2.0))
    noised = objective.noise(video, None, generator=torch.Generator().manual_seed(3))
    assert noised.audio is None
    loss = objective.loss(torch.zeros_like(video), None, noised)
    assert loss.audio is None
    torch.testing.assert_close(loss.total, 2.0 * noised.video.target.square().mean())
    audio_only = objective.noise(None, audio, generator=torch.Generator().manual_seed(3))
    loss = objective.loss(None, torch.zeros_like(audio), audio_only)
    assert loss.video is None
    torch.testing.assert_close(loss.total, audio_only.audio.target.square().mean())


def test_bad_inputs_raise():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="prediction and target must have the same shape"):
        masked_mse(x, torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"loss_mask must have 3 dims, each 1 or equal to the prediction's"):
        masked_mse(x, x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="loss_mask must have 3 dims"):
        masked_mse(x, x, torch.ones(2, 2, 4))
    with pytest.raises(
        ValueError, match="video_prediction and video_target must both be tensors or both be None"
    ):
        joint_flow_matching_loss(
            video_prediction=x, audio_prediction=None, video_target=None, audio_target=None
        )
    with pytest.raises(ValueError, match="at least one of video_prediction and audio_prediction"):
        joint_flow_matching_loss(
            video_prediction=None, audio_prediction=None, video_target=None, audio_target=None
        )
    with pytest.raises(ValueError, match="audio_loss_mask was given but audio_prediction is None"):
        joint_flow_matching_loss(
            video_prediction=x, audio_prediction=None, video_target=x, audio_target=None, audio_loss_mask=x
        )
    with pytest.raises(ValueError, match=r"sigma must be a tensor of shape \[B\] = \[2\]"):
        noise_latents(x, torch.zeros(3))
    objective = JointFlowMatching(JointFlowMatchingConfig())
    with pytest.raises(ValueError, match="must share the batch size"):
        objective.noise(torch.zeros(2, 1, 1, 1, 1), torch.zeros(3, 1, 4))
    with pytest.raises(ValueError, match="at least one of video_latents and audio_latents"):
        objective.noise(None, None)
    with pytest.raises(ValueError, match="video_weight must be a finite float >= 0"):
        JointFlowMatchingConfig(video_weight=-1.0)
    with pytest.raises(TypeError, match="timestep_sharing must be a TimestepSharing"):
        JointFlowMatchingConfig(timestep_sharing="shared")
    with pytest.raises(TypeError, match="config must be a JointFlowMatchingConfig"):
        JointFlowMatching(TimestepSamplerConfig())


def test_shared_token_shift_needs_the_video_count_when_video_is_present():
    video, audio = _latents()
    sampler = TimestepSamplerConfig(
        shift=ShiftConfig(rule=ShiftRule.TOKEN_SQRT, shift=2.0, base_num_tokens=100)
    )
    objective = JointFlowMatching(JointFlowMatchingConfig(sampler=sampler))
    with pytest.raises(ValueError, match="video_num_tokens: the shift rule 'token_sqrt' with a shared"):
        objective.noise(video, audio, generator=torch.Generator().manual_seed(0), audio_num_tokens=25)
    # audio-only batches use the audio count
    noised = objective.noise(None, audio, generator=torch.Generator().manual_seed(0), audio_num_tokens=25)
    expected = sample_training_sigmas(4, sampler, generator=torch.Generator().manual_seed(0), num_tokens=25)
    assert torch.equal(noised.audio.sigma, expected)


def test_masks_with_values_other_than_0_and_1_or_negative_weights_raise():
    with pytest.raises(ValueError, match=r"condition_mask: expected only 0 and 1, got values \[0, 255\]"):
        loss_mask_from_condition_mask(torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match="valid_mask: expected only 0 and 1"):
        loss_mask_from_condition_mask(torch.tensor([0.0, 1.0]), valid_mask=torch.tensor([0.5, 1.0]))
    p, t = torch.zeros(1, 2), torch.ones(1, 2)
    for bad in (torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, float("nan")]])):
        with pytest.raises(ValueError, match="loss_mask: expected finite non-negative weights"):
            masked_mse(p, t, bad)
    assert masked_mse(p, t, torch.tensor([[2.0, 0.0]])).item() == pytest.approx(1.0)


def test_noising_keeps_bf16_latents_in_bf16():
    x0 = torch.randn(2, 3, 4).to(torch.bfloat16)
    noised = noise_latents(x0, torch.tensor([0.3, 0.8]), generator=torch.Generator().manual_seed(0))
    assert noised.noisy.dtype == noised.target.dtype == torch.bfloat16
    want = (1 - torch.tensor([0.3, 0.8]).view(2, 1, 1)) * x0.float() + torch.tensor([0.3, 0.8]).view(
        2, 1, 1
    ) * (noised.target.float() + x0.float())
    torch.testing.assert_close(noised.noisy.float(), want, rtol=2e-2, atol=2e-2)
