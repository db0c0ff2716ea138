"""The VAE training objective: reconstruction (MR-STFT, mel, optional waveform L1), KL, optional GAN.

``total = spectral_convergence_weight * SC + log_magnitude_weight * LM + mel_weight * mel
+ waveform_l1_weight * |x - x_hat| + kl_weight * KL`` and, when ``adversarial`` is ``"hinge"`` or
``"lsgan"``, the generator adds
``adversarial_weight * adv + feature_matching_weight * FM`` while a separate step trains the
discriminator (``adversarial.py``, ``discriminators.py``). KL is the mean over latent elements of
the per-element KL (``bottleneck.py``). The Lightning module in ``skyreels_v4.audio_vae`` runs the
two optimisers; this module only computes numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from skyreels_audio_vae.adversarial import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from skyreels_audio_vae.bottleneck import DiagonalGaussian
from skyreels_audio_vae.discriminators import AudioDiscriminator, DiscriminatorConfig
from skyreels_audio_vae.spectral_losses import (
    MelLossConfig,
    MultiResolutionSTFTLoss,
    MultiResolutionSTFTLossConfig,
    MultiScaleMelLoss,
)

__all__ = ["AudioVAELoss", "AudioVAELossConfig"]


@dataclass(frozen=True, kw_only=True)
class AudioVAELossConfig:
    """Weights and settings of every loss term; ``adversarial="none"`` trains without a discriminator."""

    stft: MultiResolutionSTFTLossConfig = field(default_factory=MultiResolutionSTFTLossConfig)
    mel: MelLossConfig = field(default_factory=MelLossConfig)
    spectral_convergence_weight: float = 1.0
    log_magnitude_weight: float = 1.0
    mel_weight: float = 1.0
    waveform_l1_weight: float = 0.0
    kl_weight: float = 1e-4
    adversarial: Literal["none", "hinge", "lsgan"] = "none"
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 2.0
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        for name in (
            "spectral_convergence_weight",
            "log_magnitude_weight",
            "mel_weight",
            "waveform_l1_weight",
            "kl_weight",
            "adversarial_weight",
            "feature_matching_weight",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
        if self.adversarial not in ("none", "hinge", "lsgan"):
            raise ValueError(f"adversarial: expected 'none', 'hinge' or 'lsgan', got {self.adversarial!r}")


class AudioVAELoss(nn.Module):
    """Loss terms for :class:`~skyreels_audio_vae.AudioVAE`; holds the discriminator when adversarial."""

    def __init__(self, config: AudioVAELossConfig, *, sample_rate: int, audio_channels: int) -> None:
        super().__init__()
        self.config = config
        self.stft_loss = MultiResolutionSTFTLoss(config.stft)
        self.mel_loss = MultiScaleMelLoss(sample_rate=sample_rate, config=config.mel)
        self.discriminator = (
            AudioDiscriminator(config.discriminator, audio_channels=audio_channels)
            if config.adversarial != "none"
            else None
        )

    def reconstruction_losses(
        self, reconstruction: Tensor, target: Tensor, posterior: DiagonalGaussian
    ) -> dict[str, Tensor]:
        """Named scalar terms plus their weighted sum ``"total"`` (waveforms ``[B, channels, T]``)."""
        c = self.config
        stft = self.stft_loss(reconstruction, target)
        terms = {
            "stft_sc": stft.spectral_convergence,
            "stft_logmag": stft.log_magnitude,
            "mel": self.mel_loss(reconstruction, target),
            "waveform_l1": (reconstruction.float() - target.float()).abs().mean(),
            "kl": posterior.kl_per_element().float().mean(),
        }
        terms["total"] = (
            c.spectral_convergence_weight * stft.spectral_convergence
            + c.log_magnitude_weight * stft.log_magnitude
            + c.mel_weight * terms["mel"]
            + c.waveform_l1_weight * terms["waveform_l1"]
            + c.kl_weight * terms["kl"]
        )
        return terms

    def _require_discriminator(self) -> AudioDiscriminator:
        if self.discriminator is None:
            raise ValueError("config.adversarial: is 'none'; adversarial terms need 'hinge' or 'lsgan'")
        return self.discriminator

    def generator_losses(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Adversarial and feature-matching terms for the VAE step, plus their weighted ``"total"``."""
        disc = self._require_discriminator()
        with torch.no_grad():
            real = disc(target)
        fake = disc(reconstruction)
        adv = generator_adversarial_loss(fake, self.config.adversarial)  # type: ignore[arg-type]
        fm = feature_matching_loss(real, fake)
        total = self.config.adversarial_weight * adv + self.config.feature_matching_weight * fm
        return {"adversarial": adv, "feature_matching": fm, "total": total}

    def discriminator_losses(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The discriminator's loss on real ``target`` vs detached ``reconstruction``."""
        disc = self._require_discriminator()
        loss = discriminator_loss(disc(target), disc(reconstruction.detach()), self.config.adversarial)  # type: ignore[arg-type]
        return {"discriminator": loss, "total": loss}
