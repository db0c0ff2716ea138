"""LightningModule training :class:`skyreels_audio_vae.AudioVAE` with its objective (optionally a GAN).

Manual optimisation, always: one Adam for the VAE and, when ``loss.adversarial`` is not
``"none"``, one for the discriminator. Per batch: (1) encode with a sampled posterior and decode;
(2) if adversarial, one discriminator step on the detached reconstruction; (3) one VAE step on the
reconstruction + KL terms, plus the generator's adversarial and feature-matching terms once
``adversarial_start_step`` VAE steps have passed (the discriminator trains from the first step,
so every parameter has optimiser state and ``ckpt_path: last`` resumes cleanly).

Learning rate: constant, or (``lr_schedule="cosine"``) a linear warm-up over ``warmup_steps`` VAE
steps then a cosine decay to ``min_lr_ratio * learning_rate`` at the last VAE step (from
``trainer.max_steps``, which counts both optimisers' steps when adversarial). Short CPU runs end
much better with the decay (docs/audio-vae.md).

Logged: ``train/<term>`` every step, ``val/<term>`` plus ``val/si_snr_db``, ``val/mel_distance``
and ``val/stft_distance`` per validation. ``self.vae`` is the plain model to export.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from skyreels_audio_vae import AudioVAE, AudioVAEConfig, AudioVAELoss, AudioVAELossConfig
from skyreels_v4.audio_vae.metrics import ReconstructionMetrics

__all__ = ["AudioVAELightningModule"]


class AudioVAELightningModule(L.LightningModule):
    """Train an :class:`AudioVAE`; batches are waveforms ``[B, audio_channels, T]``."""

    def __init__(
        self,
        *,
        vae: AudioVAEConfig,
        loss: AudioVAELossConfig,
        learning_rate: float = 3e-4,
        discriminator_learning_rate: float = 1e-4,
        betas: tuple[float, float] = (0.8, 0.99),
        gradient_clip_norm: float | None = 1.0,
        adversarial_start_step: int = 0,
        sample_posterior: bool = True,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        if not isinstance(vae, AudioVAEConfig):
            raise TypeError(f"vae: expected AudioVAEConfig, got {type(vae).__name__}")
        if not isinstance(loss, AudioVAELossConfig):
            raise TypeError(f"loss: expected AudioVAELossConfig, got {type(loss).__name__}")
        # Plain dicts in hparams: checkpoints stay loadable without unpickling our classes.
        self.save_hyperparameters(
            {
                "vae": asdict(vae),
                "loss": asdict(loss),
                "learning_rate": learning_rate,
                "discriminator_learning_rate": discriminator_learning_rate,
                "betas": list(betas),
                "gradient_clip_norm": gradient_clip_norm,
                "adversarial_start_step": adversarial_start_step,
                "sample_posterior": sample_posterior,
                "lr_schedule": lr_schedule,
                "warmup_steps": warmup_steps,
                "min_lr_ratio": min_lr_ratio,
            }
        )
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule: expected 'constant' or 'cosine', got {lr_schedule!r}")
        if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(
                f"warmup_steps/min_lr_ratio: expected >= 0 and in [0, 1], got {warmup_steps}, {min_lr_ratio}"
            )
        self.lr_schedule, self.warmup_steps, self.min_lr_ratio = lr_schedule, warmup_steps, min_lr_ratio
        self.automatic_optimization = False
        self.vae_config, self.loss_config = vae, loss
        self.learning_rate, self.discriminator_learning_rate = learning_rate, discriminator_learning_rate
        self.betas, self.gradient_clip_norm = tuple(betas), gradient_clip_norm
        self.adversarial_start_step, self.sample_posterior = adversarial_start_step, sample_posterior
        self.vae = AudioVAE(vae)
        self.objective = AudioVAELoss(loss, sample_rate=vae.sample_rate, audio_channels=vae.audio_channels)
        self.metrics = ReconstructionMetrics(sample_rate=vae.sample_rate)
        self.vae_steps = 0

    @property
    def adversarial(self) -> bool:
        return self.objective.discriminator is not None

    def lr_factor(self, vae_step: int, total_vae_steps: int) -> float:
        """Multiplier of the base learning rate at ``vae_step`` (0-based) of ``total_vae_steps``."""
        if self.lr_schedule == "constant":
            return 1.0
        if vae_step < self.warmup_steps:
            return (vae_step + 1) / self.warmup_steps
        span = max(1, total_vae_steps - self.warmup_steps)
        progress = min(1.0, (vae_step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def configure_optimizers(self) -> Any:
        optimizers = [torch.optim.Adam(self.vae.parameters(), lr=self.learning_rate, betas=self.betas)]
        if self.objective.discriminator is not None:
            optimizers.append(
                torch.optim.Adam(
                    self.objective.discriminator.parameters(),
                    lr=self.discriminator_learning_rate,
                    betas=self.betas,
                )
            )
        if self.lr_schedule == "constant":
            return optimizers[0] if len(optimizers) == 1 else optimizers
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps <= 0:
            raise ValueError(
                f"trainer.max_steps: lr_schedule='cosine' needs a positive max_steps, got {max_steps}"
            )
        total = max_steps // len(optimizers)  # every optimiser steps once per batch

        def factor(step: int) -> float:
            return self.lr_factor(step, total)

        return [
            {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor)}
            for opt in optimizers
        ]

    def _step(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.gradient_clip_norm is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.gradient_clip_norm, gradient_clip_algorithm="norm"
            )
        optimizer.step()

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        optimizers = self.optimizers()
        vae_opt, disc_opt = (
            (optimizers[0], optimizers[1]) if isinstance(optimizers, list) else (optimizers, None)
        )
        out = self.vae(batch, sample_posterior=self.sample_posterior)
        terms = self.objective.reconstruction_losses(out.reconstruction, batch, out.posterior)
        loss = terms["total"]
        if disc_opt is not None:
            disc_terms = self.objective.discriminator_losses(out.reconstruction, batch)
            self._step(disc_opt, disc_terms["total"])
            terms["discriminator"] = disc_terms["discriminator"]
            if self.vae_steps >= self.adversarial_start_step:
                gen_terms = self.objective.generator_losses(out.reconstruction, batch)
                terms["adversarial"], terms["feature_matching"] = (
                    gen_terms["adversarial"],
                    gen_terms["feature_matching"],
                )
                loss = loss + gen_terms["total"]
        self._step(vae_opt, loss)
        self.vae_steps += 1
        if self.lr_schedule != "constant":
            schedulers = self.lr_schedulers()
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()  # type: ignore[union-attr]
            terms["lr"] = torch.tensor(vae_opt.param_groups[0]["lr"])
        terms["loss"] = loss
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in terms.items() if k != "total"},
            prog_bar=False,
            on_step=True,
            on_epoch=False,
            batch_size=batch.shape[0],
        )
        self.log(
            "train_loss",
            loss.detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=batch.shape[0],
        )
        return loss.detach()

    def validation_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        out = self.vae(batch, sample_posterior=False)
        terms = self.objective.reconstruction_losses(out.reconstruction, batch, out.posterior)
        scores = self.metrics(out.reconstruction, batch)
        logged = {f"val/{k}": v for k, v in terms.items() if k != "total"}
        logged |= {
            "val/loss": terms["total"],
            "val/si_snr_db": scores.si_snr_db,
            "val/mel_distance": scores.mel_distance,
            "val/stft_distance": scores.stft_distance,
        }
        self.log_dict(logged, on_epoch=True, batch_size=batch.shape[0])
        return {"reconstruction": out.reconstruction.detach(), "target": batch}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vae_steps"] = self.vae_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.vae_steps = int(checkpoint.get("vae_steps", 0))
