"""SpectrogramAudioCodec: encode against a numpy STFT, Griffin-Lim decode scored with the project's
metrics on world clips, the phase-free property it exists for, determinism, folder and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from skyreels_v4.errors import FileFormatError
from skyreels_v4.metrics import AudioVideoSync, PitchAdherence, PitchConfig, SyncConfig
from skyreels_v4.metrics.pitch import tone_pitches
from skyreels_v4.vae import FrameAudioCodec, SpectrogramAudioCodec, load_audio_codec
from skyreels_v4.vae.spectrogram_audio import griffin_lim
from skyreels_v4.world import ProceduralAVDataset, WorldConfig, WorldSplit


def _numpy_latents(wave: np.ndarray, n_fft: int, hop: int, scale: float, p: float) -> np.ndarray:
    """Reference: zero-padded frames centred at l * hop, periodic Hann, |rfft|, scaled, companded."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(wave, (n_fft // 2, n_fft // 2))
    frames = [padded[l * hop : l * hop + n_fft] * window for l in range(wave.size // hop)]
    magnitude = np.abs(np.fft.rfft(np.stack(frames), axis=1)).T  # [F, L]
    return (magnitude / scale) ** p


def _blip(num_samples: int, onset: float, pitch: float, rate: int = 16000) -> torch.Tensor:
    t = np.arange(num_samples) / rate - onset
    wave = np.where((t >= 0) & (t < 0.05), 0.3 * np.minimum(t / 0.001, 1) * np.exp(-t / 0.01), 0.0)
    return torch.from_numpy(wave * np.sin(2 * np.pi * pitch * t))


def test_encode_matches_a_numpy_stft() -> None:
    codec = SpectrogramAudioCodec(hop_length=64, n_fft=256, latent_scale=0.5, compression=0.5)
    wave = torch.randn(1, 1, 64 * 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    latents = codec.encode(wave * 0.1, 16000)
    assert latents.shape == (1, 129, 12)
    expected = _numpy_latents(wave[0, 0].numpy() * 0.1, 256, 64, 0.5, 0.5)
    np.testing.assert_allclose(latents[0].numpy(), expected, rtol=1e-9, atol=1e-12)
    # Phase-free: the negated waveform has the same latents.
    torch.testing.assert_close(codec.encode(-wave * 0.1, 16000), latents, rtol=0, atol=1e-12)


def test_stereo_layout_is_channel_major() -> None:
    codec = SpectrogramAudioCodec(audio_channels=2, hop_length=64, n_fft=128)
    left = torch.randn(1, 1, 64 * 8, dtype=torch.float64) * 0.1
    wave = torch.cat([left, torch.zeros_like(left)], dim=1)
    latents = codec.encode(wave, 16000)
    assert latents.shape == (1, 2 * 65, 8)
    assert float(latents[:, 65:].abs().max()) == 0.0
    mono = SpectrogramAudioCodec(audio_channels=1, hop_length=64, n_fft=128)
    torch.testing.assert_close(latents[:, :65], mono.encode(left, 16000))


def test_griffin_lim_recovers_a_consistent_magnitude() -> None:
    wave = sum(_blip(8192, onset, pitch) for onset, pitch in ((0.05, 440.0), (0.2, 660.0), (0.35, 880.0)))
    codec = SpectrogramAudioCodec()
    magnitude = codec.magnitudes(wave.view(1, 1, -1))[0]  # [1, F, L]
    magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)

    def convergence(iterations: int) -> float:
        rebuilt = griffin_lim(magnitude, n_fft=512, hop_length=256, num_samples=8192, iterations=iterations)
        again = codec.magnitudes(rebuilt.view(1, 1, -1))[0]
        return float((again - magnitude[..., :-1]).norm() / magnitude.norm())

    start, few, many = convergence(0), convergence(8), convergence(64)
    assert start > 0.3  # random phases: far from consistent
    assert many < few < start
    assert many < 0.1


def test_griffin_lim_matches_librosa_from_the_same_start_phase() -> None:
    librosa = pytest.importorskip("librosa")
    wave = _blip(8192, 0.1, 660.0) + 0.5 * _blip(8192, 0.3, 440.0)
    codec = SpectrogramAudioCodec()
    magnitude = codec.magnitudes(wave.view(1, 1, -1))[0]
    magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)  # [1, 257, 33]: frames 0 .. 8192/256
    ones = torch.ones_like(magnitude, dtype=torch.complex128)
    ours = griffin_lim(
        magnitude, n_fft=512, hop_length=256, num_samples=8192, iterations=8, initial_phase=ones
    )
    reference = librosa.griffinlim(
        magnitude[0].numpy(),
        n_iter=8,
        hop_length=256,
        n_fft=512,
        window="hann",
        center=True,
        length=8192,
        pad_mode="constant",
        momentum=0.99,
        init=None,  # librosa's all-ones start phase
    )
    np.testing.assert_allclose(ours[0].numpy(), reference, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="initial_phase"):
        griffin_lim(magnitude, n_fft=512, hop_length=256, num_samples=8192, initial_phase=ones[..., 1:])


def test_decoded_world_clips_keep_their_onsets_and_pitches() -> None:
    world = WorldConfig(size=16, num_frames=33, sample_rate=16000, fps=16.0, max_objects=2)
    data = ProceduralAVDataset(world, length=6, seed=3, split=WorldSplit.TRAIN)
    batch = default_collate([data[i] for i in range(6)])
    codec = SpectrogramAudioCodec()
    decoded = codec.decode(codec.encode(batch["audio"], 16000))
    assert decoded.shape == (6, 1, codec.num_latents_for_frames(33, 16) * 256)
    audio = torch.nn.functional.pad(decoded, (0, batch["audio"].shape[-1] - decoded.shape[-1]))
    assert float(audio.abs().max()) <= 1.0
    scores = {}
    for name, clip in (("truth", batch["audio"]), ("decoded", audio)):
        pitch = PitchAdherence(PitchConfig(sample_rate=16000))
        pitch.update(clip, batch["shape_ids"])
        sync = AudioVideoSync(SyncConfig(fps=16.0, sample_rate=16000))
        sync.update(batch["video"], clip)
        scores[name] = {**pitch.compute(), **sync.compute()}
    assert scores["truth"]["num_tones"] > 10
    assert float(scores["decoded"]["tone_accuracy"]) >= 0.95
    assert float(scores["decoded"]["recall"]) >= float(scores["truth"]["recall"]) - 0.05
    assert float(scores["decoded"]["num_onsets"]) == pytest.approx(
        float(scores["truth"]["num_onsets"]), abs=2
    )
    # Energy is kept to within 10 % (the phase is new, the magnitude is not).
    ratio = float(audio.pow(2).sum() / batch["audio"].pow(2).sum())
    assert 0.9 < ratio < 1.1


def test_the_mean_over_timing_jitter_is_still_a_blip_unlike_dct() -> None:
    """Why the codec exists: the x0 regression of a young model lands near the mean of its targets over
    what it cannot resolve yet, here a few ms of onset. Magnitudes average to a blip at the right pitch;
    the DCT codec's signed coefficients average to near silence."""
    onsets = 0.1 + np.arange(-8, 9) * 0.001  # +- 8 ms
    waves = torch.stack([_blip(8192, onset, 660.0) for onset in onsets]).unsqueeze(1)
    for codec, keeps_blip in ((SpectrogramAudioCodec(), True), (FrameAudioCodec(compression=1 / 3), False)):
        mean = codec.encode(waves, 16000).mean(dim=0, keepdim=True)
        decoded = codec.decode(mean)[0, 0]
        peak = float(decoded.abs().max())
        if keeps_blip:
            assert peak > 0.1
            pitch = tone_pitches(decoded, np.array([0.1]), PitchConfig(sample_rate=16000))[0]
            assert abs(1200 * math.log2(pitch / 660.0)) < 50
        else:
            assert peak < 0.05


def test_decoding_is_deterministic_and_ignores_the_global_seed() -> None:
    codec = SpectrogramAudioCodec(griffin_lim_iters=4)
    latents = torch.rand(2, 257, 20)
    torch.manual_seed(1)
    first = codec.decode(latents)
    torch.manual_seed(2)
    torch.testing.assert_close(codec.decode(latents), first, rtol=0, atol=0)
    # Negative latents are no magnitude: silence.
    assert float(codec.decode(-latents).abs().max()) == 0.0


def test_folder_round_trip_and_bad_configs(tmp_path) -> None:
    codec = SpectrogramAudioCodec(hop_length=128, n_fft=384, latent_scale=0.2, griffin_lim_iters=5)
    codec.save_pretrained(tmp_path / "audio")
    loaded = load_audio_codec(tmp_path / "audio")
    assert isinstance(loaded, SpectrogramAudioCodec)
    assert (loaded.hop_length, loaded.n_fft, loaded.latent_scale, loaded.griffin_lim_iters) == (
        128,
        384,
        0.2,
        5,
    )
    latents = torch.rand(1, 193, 6)
    torch.testing.assert_close(loaded.decode(latents), codec.decode(latents))
    config = json.loads((tmp_path / "audio" / "config.json").read_text())
    for key, bad in (("n_fft", 100), ("compression", 2.0), ("griffin_lim_iters", -1)):
        (tmp_path / "audio" / "config.json").write_text(json.dumps({**config, key: bad}))
        with pytest.raises(FileFormatError, match=key):
            load_audio_codec(tmp_path / "audio")
    del config["n_fft"]
    (tmp_path / "audio" / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileFormatError, match="n_fft"):
        load_audio_codec(tmp_path / "audio")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"hop_length": 0}, "hop_length"),
        ({"n_fft": 300}, "n_fft"),  # < 2 * hop
        ({"n_fft": 513, "hop_length": 128}, "n_fft"),  # odd
        ({"latent_scale": 0.0}, "latent_scale"),
        ({"latent_scale": float("inf")}, "latent_scale"),
        ({"latent_scale": True}, "latent_scale"),
        ({"compression": 0}, "compression"),
        ({"compression": True}, "compression"),
        ({"griffin_lim_iters": 1.5}, "griffin_lim_iters"),
        ({"griffin_lim_momentum": 1.0}, "griffin_lim_momentum"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SpectrogramAudioCodec(**kwargs)
