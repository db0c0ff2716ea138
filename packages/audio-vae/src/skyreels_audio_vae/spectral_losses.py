"""Multi-resolution STFT loss and multi-scale mel loss (reconstruction terms of the VAE objective).

Multi-resolution STFT (Yamamoto et al. 2020, Parallel WaveGAN), for each FFT size ``n`` (hop
``n / hop_divisor``, Hann window of ``n``) and each signal, with magnitudes ``|X|`` (prediction)
and ``|Y|`` (target) floored at ``eps``:

- spectral convergence ``SC = || |Y| - |X| ||_F / || |Y| ||_F`` with the Frobenius norms taken over
  the whole batch (all signals and channels at once; a per-signal ratio blows up on silent crops),
- log magnitude ``LM = mean | ln|Y| - ln|X| |`` over all signals, bins and frames,

each averaged over resolutions. For ``x = a * y`` (a > 0) ``SC = |1 - a|`` and
``LM = |ln a|`` exactly (above the floor), which the tests check. Mel loss (DAC-style): the mean
over scales of ``mean | log10 mel(y) - log10 mel(x) |`` (``mel.py``; log floor 1e-5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from skyreels_audio_vae.mel import MelScale, MelSpectrogram

__all__ = [
    "MelLossConfig",
    "MultiResolutionSTFTLoss",
    "MultiResolutionSTFTLossConfig",
    "MultiScaleMelLoss",
    "STFTLossTerms",
    "stft_magnitude",
]


def _check_pair(prediction: Tensor, target: Tensor) -> None:
    if prediction.ndim != 3 or prediction.shape != target.shape:
        raise ValueError(
            "prediction/target: expected equal shapes [B, channels, T], "
            f"got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )


def stft_magnitude(
    waveform_BCT: Tensor, *, n_fft: int, hop_length: int, window: Tensor, eps: float = 1e-5
) -> Tensor:
    """``|STFT|`` floored at ``eps``: ``[B, channels, T]`` -> ``[B * channels, n_fft // 2 + 1, frames]``.

    Centered frames with reflection padding (needs ``T > n_fft // 2``).
    """
    b, c, t = waveform_BCT.shape
    spec = torch.stft(
        waveform_BCT.reshape(b * c, t).float(),
        n_fft=n_fft,
        hop_length=hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    # sqrt of a floored power keeps the gradient finite where the spectrum is exactly zero.
    return torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=eps * eps))


@dataclass(frozen=True, kw_only=True)
class MultiResolutionSTFTLossConfig:
    """FFT sizes (window = size, hop = size / hop_divisor) and the magnitude floor."""

    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    hop_divisor: int = 4
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if not self.fft_sizes or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 4 for n in self.fft_sizes
        ):
            raise ValueError(f"fft_sizes: expected a non-empty tuple of ints >= 4, got {self.fft_sizes!r}")
        if (
            isinstance(self.hop_divisor, bool)
            or not isinstance(self.hop_divisor, int)
            or self.hop_divisor < 1
        ):
            raise ValueError(f"hop_divisor: expected a positive int, got {self.hop_divisor!r}")
        if not self.eps > 0:
            raise ValueError(f"eps: expected a positive float, got {self.eps!r}")


class STFTLossTerms(NamedTuple):
    """Scalar spectral convergence and log-magnitude distance (each averaged over resolutions)."""

    spectral_convergence: Tensor
    log_magnitude: Tensor

    @property
    def total(self) -> Tensor:
        return self.spectral_convergence + self.log_magnitude


class MultiResolutionSTFTLoss(nn.Module):
    """``forward(prediction, target)`` on ``[B, channels, T]`` -> :class:`STFTLossTerms`."""

    def __init__(self, config: MultiResolutionSTFTLossConfig | None = None) -> None:
        super().__init__()
        self.config = config or MultiResolutionSTFTLossConfig()
        for n in self.config.fft_sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def forward(self, prediction: Tensor, target: Tensor) -> STFTLossTerms:
        _check_pair(prediction, target)
        sc_terms, lm_terms = [], []
        for n in self.config.fft_sizes:
            kwargs = {"n_fft": n, "hop_length": max(1, n // self.config.hop_divisor), "eps": self.config.eps}
            window = getattr(self, f"window_{n}")
            pred_mag = stft_magnitude(prediction, window=window, **kwargs)
            target_mag = stft_magnitude(target, window=window, **kwargs)
            # One Frobenius ratio over the whole batch (as in Parallel WaveGAN): a per-signal ratio
            # explodes on silent training crops, where ||Y|| is only the magnitude floor.
            diff = torch.linalg.vector_norm(target_mag - pred_mag)
            sc_terms.append(diff / torch.linalg.vector_norm(target_mag))
            lm_terms.append((target_mag.log() - pred_mag.log()).abs().mean())
        return STFTLossTerms(torch.stack(sc_terms).mean(), torch.stack(lm_terms).mean())


@dataclass(frozen=True, kw_only=True)
class MelLossConfig:
    """One mel spectrogram per (n_fft, n_mels) pair; hop = n_fft / 4; mel scale and filter norm."""

    n_ffts: tuple[int, ...] = (2048, 1024, 512, 256)
    n_mels: tuple[int, ...] = (128, 64, 32, 16)
    scale: MelScale = "slaney"
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        if not self.n_ffts or len(self.n_ffts) != len(self.n_mels):
            raise ValueError(
                "n_ffts/n_mels: expected equal-length non-empty tuples, "
                f"got {self.n_ffts!r} and {self.n_mels!r}"
            )
        if self.scale not in ("slaney", "htk"):
            raise ValueError(f"scale: expected 'slaney' or 'htk', got {self.scale!r}")
        for name, values in (("n_ffts", self.n_ffts), ("n_mels", self.n_mels)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name}: expected positive ints, got {values!r}")
        if not (isinstance(self.log_floor, (int, float)) and 0.0 < self.log_floor < math.inf):
            raise ValueError(
                f"log_floor: expected a positive finite float (log of 0 is -inf), got {self.log_floor!r}"
            )


class MultiScaleMelLoss(nn.Module):
    """``forward(prediction, target)`` -> scalar mean L1 distance of log10 mel spectrograms."""

    def __init__(self, *, sample_rate: int, config: MelLossConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelLossConfig()
        self.spectrograms = nn.ModuleList(
            MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=n_fft,
                hop_length=n_fft // 4,
                n_mels=n_mels,
                scale=self.config.scale,
            )
            for n_fft, n_mels in zip(self.config.n_ffts, self.config.n_mels)
        )

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_pair(prediction, target)
        floor = self.config.log_floor
        terms = [
            (mel.log(prediction, eps=floor) - mel.log(target, eps=floor)).abs().mean()
            for mel in self.spectrograms
        ]
        return torch.stack(terms).mean()
