import torch

from skyreels_audio_vae import AudioVAE, LatentStatistics, estimate_latent_statistics


def test_streaming_statistics_equal_the_concatenated_computation():
    torch.manual_seed(0)
    batches = [torch.randn(2, 3, n) * torch.tensor([1.0, 5.0, 0.1])[:, None] + 3 for n in (1, 7, 40)]
    stats = LatentStatistics(3)
    for b in batches:
        stats.update(b)
    mean, std = stats.result()
    flat = torch.cat([b.transpose(0, 1).reshape(3, -1) for b in batches], dim=1).double()
    torch.testing.assert_close(mean, flat.mean(dim=1).float())
    torch.testing.assert_close(std, flat.std(dim=1, unbiased=False).float())


def test_estimate_latent_statistics_normalises_the_latents(micro_config, randomize):
    model = randomize(AudioVAE(micro_config())).eval()
    waveforms = [torch.randn(2, 1, 8 * 1024) for _ in range(3)]
    mean, std = estimate_latent_statistics(model, waveforms)
    model.set_latent_statistics(mean, std)
    with torch.no_grad():
        normed = torch.cat([model.encode_normalized(w) for w in waveforms], dim=-1)
    per_channel = normed.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(dim=1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
