"""Per-channel statistics of the posterior means, for latent normalisation (``model.py``).

Streaming (Chan et al. parallel variance): batches of any length are merged exactly, so the result
equals the mean/std over the concatenation of all latent frames, in float64.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from skyreels_audio_vae.model import AudioVAE

__all__ = ["LatentStatistics", "estimate_latent_statistics"]


class LatentStatistics:
    """Accumulates per-channel count, mean and M2 over ``[B, C, L]`` latents."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, latents_BCL: Tensor) -> None:
        if latents_BCL.ndim != 3 or latents_BCL.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"latents: expected [B, {self.mean.shape[0]}, L], got {tuple(latents_BCL.shape)}"
            )
        # Statistics live on the CPU in float64 whatever device the latents come from.
        x = latents_BCL.detach().to("cpu", torch.float64).transpose(0, 1).reshape(self.mean.shape[0], -1)
        n_b = x.shape[1]
        if n_b == 0:
            return
        mean_b = x.mean(dim=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(dim=1)
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n_b / total)
        self.count = total

    def result(self, *, min_std: float = 1e-5) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` as float32 ``[C]`` tensors (population std, floored at ``min_std``)."""
        if self.count == 0:
            raise ValueError("latents: no latent frames were accumulated")
        std = (self.m2 / self.count).sqrt().clamp_min(min_std)
        return self.mean.float(), std.float()


@torch.no_grad()
def estimate_latent_statistics(model: AudioVAE, waveforms: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std ``[C]`` of ``model.encode(w).mode()`` over ``waveforms`` ([B, ch, T])."""
    stats = LatentStatistics(model.config.latent_channels)
    for waveform in waveforms:
        stats.update(model.encode(waveform).mode())
    return stats.result()
