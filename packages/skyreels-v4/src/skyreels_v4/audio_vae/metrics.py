"""Reconstruction metrics for the audio VAE: SI-SNR (torchmetrics), mel distance, MR-STFT distance.

- SI-SNR (dB, higher is better): torchmetrics' scale-invariant SNR per clip and channel.
- mel distance (lower is better): the multi-scale log10-mel L1 of the training objective
  (``skyreels_audio_vae.MultiScaleMelLoss`` with its default scales).
- MR-STFT distance (lower is better): spectral convergence + log magnitude, averaged over the
  default resolutions (``skyreels_audio_vae.MultiResolutionSTFTLoss``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchmetrics.functional.audio import scale_invariant_signal_noise_ratio

from skyreels_audio_vae import MultiResolutionSTFTLoss, MultiScaleMelLoss

__all__ = ["ReconstructionMetrics", "ReconstructionScores"]


class ReconstructionScores(NamedTuple):
    """Scalar tensors averaged over the batch (and channels)."""

    si_snr_db: Tensor
    mel_distance: Tensor
    stft_distance: Tensor


class ReconstructionMetrics(nn.Module):
    """``forward(reconstruction, target)`` on ``[B, channels, T]`` -> :class:`ReconstructionScores`."""

    def __init__(self, *, sample_rate: int) -> None:
        super().__init__()
        self.mel = MultiScaleMelLoss(sample_rate=sample_rate)
        self.stft = MultiResolutionSTFTLoss()

    @torch.no_grad()
    def forward(self, reconstruction: Tensor, target: Tensor) -> ReconstructionScores:
        si_snr = scale_invariant_signal_noise_ratio(reconstruction.float(), target.float()).mean()
        return ReconstructionScores(
            si_snr, self.mel(reconstruction, target), self.stft(reconstruction, target).total
        )
