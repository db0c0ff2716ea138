import math

import numpy as np
import pytest
import torch

from skyreels_audio_vae import (
    MelLossConfig,
    MultiResolutionSTFTLoss,
    MultiResolutionSTFTLossConfig,
    MultiScaleMelLoss,
)


def _numpy_stft_magnitude(x: np.ndarray, n_fft: int, hop: int, eps: float) -> np.ndarray:
    """Centred, reflection-padded, periodic-Hann STFT magnitude by an explicit DFT matrix."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack([padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)])
    k = np.arange(n_fft // 2 + 1)[:, None]
    dft = np.exp(-2j * np.pi * k * np.arange(n_fft)[None, :] / n_fft)
    return np.maximum(np.abs(frames @ dft.T).T, eps)


def test_stft_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    target, pred = rng.standard_normal((2, 1, 3000)), rng.standard_normal((2, 1, 3000))
    config = MultiResolutionSTFTLossConfig(fft_sizes=(256, 64), hop_divisor=4)
    terms = MultiResolutionSTFTLoss(config)(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    sc, lm = [], []
    for n in (256, 64):
        ys = np.stack([_numpy_stft_magnitude(target[b, 0], n, n // 4, 1e-5) for b in range(2)])
        xs = np.stack([_numpy_stft_magnitude(pred[b, 0], n, n // 4, 1e-5) for b in range(2)])
        sc.append(np.linalg.norm(ys - xs) / np.linalg.norm(ys))  # Frobenius over the whole batch
        lm.append(np.abs(np.log(ys) - np.log(xs)).mean())
    assert terms.spectral_convergence.item() == pytest.approx(np.mean(sc), rel=1e-4)
    assert terms.log_magnitude.item() == pytest.approx(np.mean(lm), rel=1e-4)


def test_stft_loss_zero_for_identical_and_scale_correct():
    torch.manual_seed(0)
    y = torch.randn(2, 2, 4096)
    loss = MultiResolutionSTFTLoss()
    same = loss(y, y)
    assert same.spectral_convergence.item() == 0.0 and same.log_magnitude.item() == 0.0
    for a in (0.5, 2.0):
        scaled = loss(a * y, y)
        assert scaled.spectral_convergence.item() == pytest.approx(abs(1 - a), rel=1e-4)
        assert scaled.log_magnitude.item() == pytest.approx(abs(math.log(a)), rel=1e-3)
    other = loss(torch.randn(2, 2, 4096), y)
    assert other.spectral_convergence.item() > 0.5 and other.log_magnitude.item() > 0.3


def test_spectral_convergence_stays_bounded_when_one_crop_is_silent():
    torch.manual_seed(0)
    target = torch.randn(4, 1, 4096)
    target[0] = 0.0  # a silent training crop
    prediction = target + 0.1 * torch.randn(4, 1, 4096)
    sc = MultiResolutionSTFTLoss()(prediction, target).spectral_convergence.item()
    assert sc < 0.5  # a per-signal ratio would be ~1e4 here (noise over the 1e-5 floor)


def test_losses_have_finite_gradients_on_silence():
    silence = torch.zeros(1, 1, 4096, requires_grad=True)
    target = torch.randn(1, 1, 4096)
    total = MultiResolutionSTFTLoss()(silence, target).total + MultiScaleMelLoss(sample_rate=44100)(
        silence, target
    )
    total.backward()
    assert torch.isfinite(silence.grad).all()


def test_mel_loss_zero_for_identical_positive_otherwise_and_log_scaled():
    torch.manual_seed(0)
    y = torch.randn(1, 1, 8192) * 0.1
    mel = MultiScaleMelLoss(sample_rate=44100, config=MelLossConfig(n_ffts=(1024, 256), n_mels=(64, 16)))
    assert mel(y, y).item() == 0.0
    # scaling by 10 shifts log10 mel by exactly 1 wherever both are above the floor
    assert mel(10 * y, y).item() == pytest.approx(1.0, rel=1e-3)
    assert mel(torch.randn(1, 1, 8192) * 0.1, y).item() > 0.05
    with pytest.raises(ValueError, match="n_ffts/n_mels"):
        MelLossConfig(n_ffts=(1024,), n_mels=(64, 32))
    with pytest.raises(ValueError, match="prediction/target"):
        mel(y, y[..., :4096])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"log_floor": 0.0}, "log_floor: expected a positive finite float"),
        ({"log_floor": -1.0}, "log_floor: expected a positive finite float"),
        ({"n_ffts": (256, 0), "n_mels": (16, 8)}, "n_ffts: expected positive ints"),
        ({"n_ffts": (256,), "n_mels": (16.5,)}, "n_mels: expected positive ints"),
    ],
)
def test_bad_mel_loss_configs_raise(kwargs, match):
    from skyreels_audio_vae import MelLossConfig

    with pytest.raises(ValueError, match=match):
        MelLossConfig(**kwargs)
