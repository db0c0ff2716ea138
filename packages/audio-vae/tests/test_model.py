import math

import pytest
import torch

from skyreels_audio_vae import AudioVAE, AudioVAEConfig, DiagonalGaussian, audio_vae_preset


def test_encode_decode_lengths_and_channels(micro_config):
    for channels in (1, 2):
        model = AudioVAE(micro_config(audio_channels=channels))
        x = torch.randn(2, channels, 3 * 1024)
        posterior = model.encode(x)
        assert posterior.mean.shape == (2, 4, 3) and posterior.std.shape == (2, 4, 3)
        assert torch.all(posterior.std > 0)
        assert model.decode(posterior.mode()).shape == (2, channels, 3 * 1024)
        out = model(x, sample_posterior=False)
        torch.testing.assert_close(out.latents, posterior.mean)
        torch.testing.assert_close(out.reconstruction, model.decode(posterior.mean))


def test_bad_inputs_raise_named_errors(micro_config):
    model = AudioVAE(micro_config())
    with pytest.raises(ValueError, match="waveform: expected a positive multiple of hop_length=1024"):
        model.encode(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="waveform: expected \\[B, 1, T\\]"):
        model.encode(torch.zeros(1, 2, 1024))
    with pytest.raises(ValueError, match="latents: expected \\[B, 4, L\\]"):
        model.decode(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="strides: expected even strides"):
        micro_config(strides=(2, 3, 8, 16))
    with pytest.raises(ValueError, match="channel_multipliers"):
        micro_config(channel_multipliers=(1, 2))
    with pytest.raises(ValueError, match="scale_parameterization"):
        micro_config(scale_parameterization="relu")
    with pytest.raises(TypeError, match="config"):
        AudioVAE({"latent_channels": 4})  # type: ignore[arg-type]


def test_config_is_frozen_keyword_only_and_hop_is_product_of_strides():
    config = AudioVAEConfig()
    assert config.hop_length == 1024 and math.isclose(config.latent_rate, 44100 / 1024)
    with pytest.raises(TypeError):
        AudioVAEConfig(44100)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.latent_channels = 3  # type: ignore[misc]
    assert audio_vae_preset("stable_audio_open").hop_length == 2048
    with pytest.raises(ValueError, match="name"):
        audio_vae_preset("huge")  # type: ignore[arg-type]


def test_preset_parameter_counts_on_meta_device():
    counts = {}
    for name in ("tiny", "base", "stable_audio_open"):
        with torch.device("meta"):
            model = AudioVAE(audio_vae_preset(name))
        counts[name] = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < counts["tiny"] < 2e6
    assert counts["tiny"] < counts["base"] < counts["stable_audio_open"]
    # Stable Audio Open's VAE has about 157M parameters.
    assert 150e6 < counts["stable_audio_open"] < 160e6


def test_latent_normalisation_round_trip_and_statistics_checks(micro_config):
    model = AudioVAE(micro_config())
    mean, std = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([2.0, 0.5, 1.0, 4.0])
    model.set_latent_statistics(mean, std)
    z = torch.randn(2, 4, 5)
    normed = model.normalize_latents(z)
    torch.testing.assert_close(normed, (z - mean[:, None]) / std[:, None])
    torch.testing.assert_close(model.denormalize_latents(normed), z)
    x = torch.randn(1, 1, 2048)
    torch.testing.assert_close(
        model.encode_normalized(x), (model.encode(x).mean - mean[:, None]) / std[:, None]
    )
    torch.testing.assert_close(model.decode_normalized(normed), model.decode(z))
    assert "latent_mean" in model.state_dict() and "latent_std" in model.state_dict()
    with pytest.raises(ValueError, match="std: expected strictly positive"):
        model.set_latent_statistics(mean, torch.zeros(4))
    with pytest.raises(ValueError, match="mean: expected a tensor of shape \\(4,\\)"):
        model.set_latent_statistics(torch.zeros(3), std)


@pytest.mark.parametrize("parameterization", ["softplus", "exp"])
def test_gaussian_kl_matches_torch_distributions(parameterization):
    torch.manual_seed(0)
    raw = torch.randn(2, 6, 7) * 2
    posterior = DiagonalGaussian.from_encoder_output(raw, parameterization)
    mean, scale = raw.chunk(2, dim=1)
    expected_std = (
        torch.nn.functional.softplus(scale) + 1e-4 if parameterization == "softplus" else torch.exp(scale / 2)
    )
    torch.testing.assert_close(posterior.std, expected_std)
    torch.testing.assert_close(posterior.mean, mean)
    q = torch.distributions.Normal(posterior.mean, posterior.std)
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(posterior.kl_per_element(), torch.distributions.kl_divergence(q, p))
    g = torch.Generator().manual_seed(1)
    samples = torch.stack([posterior.sample(g) for _ in range(2000)])
    torch.testing.assert_close(
        samples.mean(0), posterior.mean, atol=0.15 * float(posterior.std.max()), rtol=0
    )
