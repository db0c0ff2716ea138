"""Audio codecs: FrameAudioCodec exact inversion, the 218 rule, resampling against scipy, a tiny
AudioVAE round trip through AudioCodec (shape, normalisation, folder), validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skyreels_audio_vae import AudioVAE, audio_vae_preset
from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError
from skyreels_v4.vae import AudioCodec, FrameAudioCodec, load_audio_codec, resample_waveform


def test_frame_codec_inverts_exactly_and_counts() -> None:
    codec = FrameAudioCodec(audio_channels=2, hop_length=64)
    wave = torch.randn(2, 2, 64 * 10, dtype=torch.float64) * 0.1
    latents = codec.encode(wave, 16000)
    assert latents.shape == (2, 128, 10)
    torch.testing.assert_close(codec.decode(latents), wave, rtol=0, atol=1e-12)
    energy = (latents * codec.latent_scale).pow(2).sum()
    torch.testing.assert_close(energy, wave.pow(2).sum())  # orthonormal
    assert FrameAudioCodec(sample_rate=44100, hop_length=1024).num_latents_for_frames(81, 16) == 218


def test_frame_codec_companding_inverts_and_round_trips_its_folder(tmp_path) -> None:
    from scipy.fft import dct

    codec = FrameAudioCodec(hop_length=64, compression=1 / 3)
    wave = torch.randn(1, 1, 64 * 6, dtype=torch.float64) * 0.1
    latents = codec.encode(wave, 16000)
    # Reference: scipy's orthonormal DCT-II of each frame, scaled, then the signed cube root.
    frames = wave[0, 0].numpy().reshape(6, 64)
    coefficients = dct(frames, type=2, norm="ortho", axis=1) / codec.latent_scale
    expected = np.sign(coefficients) * np.abs(coefficients) ** (1 / 3)
    np.testing.assert_allclose(latents[0].numpy(), expected.T, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(codec.decode(latents), wave, rtol=0, atol=1e-12)
    codec.save_pretrained(tmp_path / "audio_vae")
    loaded = load_audio_codec(tmp_path / "audio_vae")
    assert loaded.compression == pytest.approx(1 / 3)
    torch.testing.assert_close(loaded.encode(wave, 16000), latents)
    for bad in (0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="compression"):
            FrameAudioCodec(compression=bad)
    # A folder written before companding existed has no "compression": the linear codec loads.
    config_path = tmp_path / "audio_vae" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({k: v for k, v in config.items() if k != "compression"}))
    assert load_audio_codec(tmp_path / "audio_vae").compression == 1.0
    config_path.write_text(json.dumps({**config, "compression": 2.0}))  # a bad value: the file is named
    with pytest.raises(FileFormatError, match=r"config\.json.*compression"):
        load_audio_codec(tmp_path / "audio_vae")


def test_resampling_matches_scipy() -> None:
    from scipy.signal import resample_poly

    t = np.arange(44100) / 44100
    wave = torch.from_numpy(np.sin(2 * np.pi * 440 * t))[None, None]
    ours = resample_waveform(wave, 44100, 16000)[0, 0].numpy()
    reference = resample_poly(wave[0, 0].numpy(), 160, 441)
    assert ours.shape == (16000,)
    assert np.abs(ours[200:-200] - reference[200:-200]).max() < 1e-3


def test_audio_vae_codec_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    vae = AudioVAE(audio_vae_preset("tiny")).eval()
    vae.set_latent_statistics(torch.linspace(-0.1, 0.1, 16), torch.linspace(0.5, 1.5, 16))
    codec = AudioCodec(vae)
    stereo = torch.randn(1, 2, 4 * 1024 + 100) * 0.1
    with torch.no_grad():
        latents = codec.encode(stereo, 44100)
        raw = vae.encode(stereo.mean(dim=1, keepdim=True)[..., : 4 * 1024]).mode()
        torch.testing.assert_close(latents, vae.normalize_latents(raw))
        assert codec.decode(latents).shape == (1, 1, 4096)
        assert codec.decode(latents, sample_rate=22050).shape == (1, 1, 2048)
    loaded = load_audio_codec(codec.save_pretrained(tmp_path / "a"))
    with torch.no_grad():
        assert torch.equal(loaded.encode(stereo, 44100), latents)
    with pytest.raises(SkyReelsError, match="at least one hop"):
        codec.encode(torch.zeros(1, 1, 100), 44100)
    with pytest.raises(NonFiniteError):
        codec.encode(torch.full((1, 1, 2048), float("nan")), 44100)
    with pytest.raises(ValueError, match="sample_rate"):
        codec.encode(torch.zeros(1, 1, 2048), 0)
    with pytest.raises(ValueError, match="rank 3"):
        codec.encode(torch.zeros(1, 2048), 44100)
