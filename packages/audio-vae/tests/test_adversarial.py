import pytest
import torch

from skyreels_audio_vae import (
    AudioDiscriminator,
    AudioVAE,
    AudioVAELoss,
    AudioVAELossConfig,
    DiscriminatorConfig,
    DiscriminatorOutput,
    MelLossConfig,
    MultiResolutionSTFTLossConfig,
    PeriodDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)

SMALL_DISC = DiscriminatorConfig(
    periods=(2, 3), period_channels=(4, 8), stft_fft_sizes=(128,), stft_channels=4
)


def _out(*values: float) -> DiscriminatorOutput:
    logits = torch.tensor(values)
    return DiscriminatorOutput(logits, [logits * 2, logits + 1])


def test_hinge_and_lsgan_formulas():
    real, fake = [_out(2.0, 0.5), _out(-1.0)], [_out(-2.0, 0.0), _out(3.0)]
    # hinge D: mean relu(1 - r) + mean relu(1 + f), averaged over the two sub-discriminators
    d1 = (0.0 + 0.5) / 2 + (0.0 + 1.0) / 2
    d2 = 2.0 + 4.0
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx((d1 + d2) / 2)
    assert generator_adversarial_loss(fake, "hinge").item() == pytest.approx(((3.0 + 1.0) / 2 + 0.0) / 2)
    l1 = ((1.0 + 0.25) / 2) + ((4.0 + 0.0) / 2)
    l2 = 4.0 + 9.0
    assert discriminator_loss(real, fake, "lsgan").item() == pytest.approx((l1 + l2) / 2)
    assert generator_adversarial_loss(fake, "lsgan").item() == pytest.approx(((9.0 + 1.0) / 2 + 4.0) / 2)
    fm = feature_matching_loss(real, fake)
    # features: [2x, x+1] -> |2r - 2f| and |r - f| per element
    e1 = ((4 * 2 + 0.5 * 2) / 2 + (4 + 0.5) / 2) / 2
    e2 = (8.0 + 4.0) / 2
    assert fm.item() == pytest.approx((e1 + e2) / 2)
    with pytest.raises(ValueError, match="kind"):
        discriminator_loss(real, fake, "wgan")  # type: ignore[arg-type]


def test_discriminators_shapes_and_period_folding():
    torch.manual_seed(0)
    disc = AudioDiscriminator(SMALL_DISC, audio_channels=2)
    outputs = disc(torch.randn(2, 2, 1000))
    assert len(outputs) == 3
    assert outputs[0].logits.shape[-1] == 2 and outputs[1].logits.shape[-1] == 3  # one column per phase
    assert all(o.logits.shape[0] == 2 and torch.isfinite(o.logits).all() for o in outputs)
    assert all(o.features[-1] is o.logits for o in outputs)
    # folding by period p: (5, 1) kernels never mix phases, so a change at phase 1 stays in column 1
    period = PeriodDiscriminator(3, audio_channels=1, channels=(4, 4))
    x = torch.randn(1, 1, 90)
    bumped = x.clone()
    bumped[..., 3 * 10 + 1] += 1.0
    changed = (period(bumped).features[1] - period(x).features[1]).abs().sum(dim=(0, 1, 2)) > 0
    assert changed.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="at least one sub-discriminator"):
        DiscriminatorConfig(periods=(), stft_fft_sizes=())


def test_adversarial_objective_gives_gradients_to_the_right_networks(micro_config):
    torch.manual_seed(0)
    config = AudioVAELossConfig(
        stft=MultiResolutionSTFTLossConfig(fft_sizes=(256, 64)),
        mel=MelLossConfig(n_ffts=(256,), n_mels=(16,)),
        adversarial="lsgan",
        discriminator=SMALL_DISC,
    )
    vae = AudioVAE(micro_config())
    objective = AudioVAELoss(config, sample_rate=44100, audio_channels=1)
    assert objective.discriminator is not None
    x = torch.randn(2, 1, 2048) * 0.3
    out = vae(x)
    d_terms = objective.discriminator_losses(out.reconstruction, x)
    d_terms["total"].backward()
    assert all(p.grad is not None for p in objective.discriminator.parameters())
    assert all(p.grad is None for p in vae.parameters())  # the reconstruction was detached
    objective.discriminator.zero_grad()
    g_terms = objective.generator_losses(out.reconstruction, x)
    recon = objective.reconstruction_losses(out.reconstruction, x, out.posterior)
    (g_terms["total"] + recon["total"]).backward()
    assert all(p.grad is not None for p in vae.parameters())
    expected = (
        config.adversarial_weight * g_terms["adversarial"]
        + config.feature_matching_weight * g_terms["feature_matching"]
    )
    torch.testing.assert_close(g_terms["total"], expected)
    no_gan = AudioVAELoss(AudioVAELossConfig(), sample_rate=44100, audio_channels=1)
    with pytest.raises(ValueError, match="adversarial"):
        no_gan.generator_losses(out.reconstruction, x)


def test_reconstruction_total_is_the_weighted_sum(micro_config):
    config = AudioVAELossConfig(
        stft=MultiResolutionSTFTLossConfig(fft_sizes=(256,)),
        mel=MelLossConfig(n_ffts=(256,), n_mels=(16,)),
        spectral_convergence_weight=2.0,
        log_magnitude_weight=7.0,
        mel_weight=3.0,
        waveform_l1_weight=5.0,
        kl_weight=0.5,
    )
    vae = AudioVAE(micro_config())
    x = torch.randn(1, 1, 2048)
    out = vae(x)
    t = AudioVAELoss(config, sample_rate=44100, audio_channels=1).reconstruction_losses(
        out.reconstruction, x, out.posterior
    )
    expected = 2 * t["stft_sc"] + 7 * t["stft_logmag"] + 3 * t["mel"] + 5 * t["waveform_l1"] + 0.5 * t["kl"]
    torch.testing.assert_close(t["total"], expected)
    torch.testing.assert_close(t["waveform_l1"], (out.reconstruction - x).abs().mean())
    with pytest.raises(ValueError, match="kl_weight"):
        AudioVAELossConfig(kl_weight=-1.0)
