"""Mel filterbank against an independent loop-based numpy reference and its defining properties."""

import math

import numpy as np
import pytest
import torch

from skyreels_audio_vae import MelSpectrogram, hz_to_mel, mel_filterbank, mel_to_hz


def _numpy_hz_to_mel(f: float, scale: str) -> float:
    if scale == "htk":
        return 2595.0 * math.log10(1.0 + f / 700.0)
    # Slaney: 3 mels per 200 Hz below 1 kHz; 27 mels per factor 6.4 above.
    return 3.0 * f / 200.0 if f < 1000.0 else 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def _numpy_mel_to_hz(m: float, scale: str) -> float:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return 200.0 * m / 3.0 if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def reference_filterbank(
    sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float, scale: str, norm: bool
) -> np.ndarray:
    lo, hi = _numpy_hz_to_mel(f_min, scale), _numpy_hz_to_mel(f_max, scale)
    points = [_numpy_mel_to_hz(lo + (hi - lo) * i / (n_mels + 1), scale) for i in range(n_mels + 2)]
    bins = [sr * k / n_fft for k in range(n_fft // 2 + 1)]
    fb = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        left, centre, right = points[i], points[i + 1], points[i + 2]
        for k, f in enumerate(bins):
            if left < f <= centre:
                fb[i, k] = (f - left) / (centre - left)
            elif centre < f < right:
                fb[i, k] = (right - f) / (right - centre)
        if norm:
            fb[i] *= 2.0 / (right - left)
    return fb


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_filterbank_matches_numpy_reference(scale, norm):
    for sr, n_fft, n_mels, f_min, f_max in ((44100, 2048, 128, 0.0, None), (22050, 1024, 40, 60.0, 8000.0)):
        ours = mel_filterbank(
            sample_rate=sr, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max, scale=scale, norm=norm
        )
        ref = reference_filterbank(sr, n_fft, n_mels, f_min, f_max or sr / 2, scale, norm == "slaney")
        assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-7 * ref.max())


def test_mel_scale_known_values_and_inverse():
    f = torch.tensor([0.0, 500.0, 1000.0, 6400.0, 22050.0], dtype=torch.float64)
    slaney = hz_to_mel(f, "slaney")
    torch.testing.assert_close(slaney[:4], torch.tensor([0.0, 7.5, 15.0, 42.0], dtype=torch.float64))
    htk = hz_to_mel(f, "htk")
    assert htk[2].item() == pytest.approx(999.9855, abs=1e-3)  # HTK puts 1000 Hz at ~1000 mel
    for scale in ("slaney", "htk"):
        torch.testing.assert_close(mel_to_hz(hz_to_mel(f, scale), scale), f)


def test_triangles_peak_at_their_centres_and_tile_to_one():
    sr, n_fft, n_mels = 16000, 4096, 20
    fb = mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, scale="htk", norm=None).double()
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sr / n_fft
    top = float(hz_to_mel(torch.tensor(sr / 2.0, dtype=torch.float64), "htk"))
    centres = mel_to_hz(torch.linspace(0, top, n_mels + 2, dtype=torch.float64), "htk")[1:-1]
    peak_bins = fb.argmax(dim=1)
    # each triangle peaks at one of the two FFT bins that bracket its centre frequency
    below = torch.floor(centres * n_fft / sr).long()
    assert torch.all((peak_bins == below) | (peak_bins == below + 1))
    assert torch.all(fb.max(dim=1).values > 0.95) and torch.all(fb <= 1.0)
    # without normalisation adjacent triangles sum to one between the first and last centre
    inside = (bins >= centres[0]) & (bins <= centres[-1])
    torch.testing.assert_close(fb.sum(dim=0)[inside], torch.ones(int(inside.sum()), dtype=torch.float64))


def test_slaney_norm_gives_unit_area_in_hz():
    sr, n_fft = 16000, 16384  # fine bins so the Riemann sum approximates the integral
    fb = mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=24, scale="slaney", norm="slaney").double()
    area = fb.sum(dim=1) * sr / n_fft
    torch.testing.assert_close(area, torch.ones(24, dtype=torch.float64), rtol=2e-3, atol=0)


def test_mel_spectrogram_of_a_sine_peaks_in_the_right_band():
    sr = 44100
    mel = MelSpectrogram(sample_rate=sr, n_fft=2048, hop_length=512, n_mels=64)
    t = torch.arange(sr // 2) / sr
    spec = mel(torch.sin(2 * math.pi * 3000.0 * t)[None, None])
    assert spec.shape == (1, 1, 64, sr // 2 // 512 + 1)
    band = spec[0, 0, :, 5:-5].mean(dim=1).argmax().item()
    fb = mel.filterbank
    assert fb[band, round(3000 * 2048 / sr)] == fb[:, round(3000 * 2048 / sr)].max()
    with pytest.raises(ValueError, match="f_min/f_max"):
        mel_filterbank(sample_rate=sr, n_fft=512, n_mels=10, f_max=30000.0)
