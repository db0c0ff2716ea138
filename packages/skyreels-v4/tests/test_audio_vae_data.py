"""Audio I/O (soundfile + soxr) and the folder DataModule for the audio VAE."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from skyreels_v4.audio_vae import (
    AudioClipDataset,
    AudioFolderDataModule,
    is_validation_file,
    load_audio,
    write_wav,
)


def _sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def test_load_audio_resamples_with_soxr_and_converts_channels(tmp_path):
    sf.write(tmp_path / "a.wav", _sine(440.0, 22050, 1.0), 22050)
    audio = load_audio(tmp_path / "a.wav", sample_rate=44100, channels=1)
    assert audio.shape == (1, 44100) and audio.dtype == torch.float32
    expected = torch.from_numpy(_sine(440.0, 44100, 1.0)).float()
    # band-limited resampling is exact for a 440 Hz sine, up to the filter's edge transients
    assert (audio[0, 2000:-2000] - expected[2000:-2000]).abs().max() < 2e-3
    stereo = np.stack([_sine(300.0, 48000, 0.5), -0.5 * _sine(300.0, 48000, 0.5)], axis=1)
    sf.write(tmp_path / "b.flac", stereo, 48000)
    mono = load_audio(tmp_path / "b.flac", sample_rate=48000, channels=1)
    torch.testing.assert_close(
        mono[0], torch.from_numpy(0.25 * _sine(300.0, 48000, 0.5)).float(), atol=1e-4, rtol=0
    )
    both = load_audio(tmp_path / "a.wav", sample_rate=22050, channels=2)
    assert both.shape == (2, 22050) and torch.equal(both[0], both[1])
    with pytest.raises(ValueError, match="cannot convert 2-channel audio to 3 channels"):
        load_audio(tmp_path / "b.flac", sample_rate=48000, channels=3)


def test_write_wav_round_trips_and_clips(tmp_path):
    audio = torch.tensor([[0.0, 0.5, -0.25, 2.0]])
    path = write_wav(tmp_path / "sub" / "x.wav", audio, 44100)
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 44100 and data.shape == (4, 1)
    np.testing.assert_allclose(data[:, 0], [0.0, 0.5, -0.25, 1.0], atol=1 / 32767)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.wav"]  # no temporary left behind


def test_random_crops_skip_silence():
    clip = torch.zeros(1, 100_000)
    clip[:, 60_000:70_000] = 0.5  # one loud stretch in a silent file
    dataset = AudioClipDataset([clip], crop_samples=4096, random_crop=True, min_crop_rms=0.05, crop_tries=50)
    torch.manual_seed(0)
    assert all(dataset[0].square().mean().sqrt() >= 0.05 for _ in range(20))
    single_try = AudioClipDataset([clip], crop_samples=4096, random_crop=True, crop_tries=1)
    assert sum(bool(single_try[0].abs().max() == 0) for _ in range(20)) > 5  # most single draws are silent


def test_split_rule_is_deterministic_and_close_to_the_fraction():
    names = [f"clip_{i:04d}.wav" for i in range(4000)]
    chosen = [n for n in names if is_validation_file(n, 0.1)]
    assert chosen == [n for n in names if is_validation_file(n, 0.1)]
    assert abs(len(chosen) / len(names) - 0.1) < 0.02
    assert set(chosen) <= {n for n in names if is_validation_file(n, 0.3)}  # monotone in the fraction


def test_datamodule_crops_pads_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        seconds = 0.05 if i == 0 else 0.5  # one clip shorter than the crop
        sf.write(tmp_path / f"clip_{i:02d}.wav", 0.1 * rng.standard_normal(int(22050 * seconds)), 22050)
    dm = AudioFolderDataModule(
        root=str(tmp_path), crop_samples=4096, hop_length=1024, batch_size=2, val_fraction=0.3
    )
    dm.setup("fit")
    expected_val = sum(is_validation_file(f"clip_{i:02d}.wav", 0.3) for i in range(12))
    assert len(dm.val_clips) == expected_val and len(dm.train_clips) == 12 - expected_val
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 1, 4096)
    val = torch.cat(list(dm.val_dataloader()))
    for crop, clip in zip(val, dm.val_clips):
        start = max(0, (clip.shape[-1] - 4096) // 2)  # centred, deterministic
        torch.testing.assert_close(crop[:, : min(4096, clip.shape[-1])], clip[:, start : start + 4096])
    short = [c for c in dm.train_clips + dm.val_clips if c.shape[-1] < 4096]
    assert len(short) == 1 and math.isclose(short[0].shape[-1], 2205, abs_tol=1)
    with pytest.raises(ValueError, match="crop_samples: expected a positive multiple of hop_length=1024"):
        AudioFolderDataModule(root=str(tmp_path), crop_samples=1000)
    with pytest.raises(FileNotFoundError, match="root"):
        AudioFolderDataModule(root=str(tmp_path / "missing")).setup("fit")
