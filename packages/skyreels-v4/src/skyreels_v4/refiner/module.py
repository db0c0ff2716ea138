"""LightningModule training the SR + frame-interpolation refiner by flow matching (paper section 4.5).

Per batch of (low-res, keyframes, high-res[, kept source box]) latents:

1. the refiner's conditioning ``U, I, M`` from the low-res latents, the keyframes and the kept box
   (``skyreels_refiner_vsa.build_refiner_condition``; ``I`` holds eq. 7's black-frame latent where
   ``M = 0``: the ``black_latent`` argument, 0 by default, right for the zero-mean procedural latents);
2. ``σ`` from the timestep sampler, ``x_σ = (1-σ)·x0 + σ·ε``, target ``u = ε - x0`` (σ convention),
   drawn from the step's generator (``runs.step_generator``: seeded by ``seed``, the global step and
   the data-parallel replica, so replicas draw their own σ and ε and a resumed run draws the same);
3. ``u_pred = refiner(Concat(V=x_σ, I, M, U), 1000·σ, text)``; loss = MSE over the generated cells
   (``1 - M``: keyframes and kept regions are conditions).

The VSA sparsity follows ``sparsity_ramp`` (set before every training batch, logged as
``train/sparsity``). Validation logs the loss at fixed σ and, at σ = 0.5, the error of the one-step
clean estimate ``x0 = x_σ - σ·u_pred`` next to the error of the interpolated condition U
(``val/x0_mse`` vs ``val/interp_mse``): a refiner that learned something beats interpolation.
``self.refiner`` is the plain model to export.

Configs are kept in ``hparams`` as plain data (``hparams.py``), so ``load_from_checkpoint`` works and
checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file
from torch import Tensor

from skyreels_flow_matching import (
    TimestepSamplerConfig,
    masked_mse,
    noise_latents,
    sample_training_sigmas,
    sigma_to_timestep,
)
from skyreels_mmdit_blocks import MMDiTBranch, PresetName, joint_preset
from skyreels_refiner_vsa import (
    RefinerCondition,
    SparsityRamp,
    VSAConfig,
    build_refiner_condition,
    refiner_from_base,
)
from skyreels_v4.refiner.hparams import as_sampler_config, as_sparsity_ramp, as_vsa_config, to_hparams
from skyreels_v4.runs import adamw, step_generator

__all__ = ["RefinerLightningModule"]


def _black_latent(value: object, channels: int) -> list[float]:
    """``black_latent`` as ``channels`` finite floats (a scalar is repeated over the channels)."""
    values = [value] if isinstance(value, int | float) else value
    if (
        isinstance(value, str | bytes)
        or not isinstance(values, Sequence)
        or any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in values)
    ):
        raise TypeError(f"black_latent: expected a finite float or a list of finite floats, got {value!r}")
    if len(values) not in (1, channels):
        raise ValueError(
            f"black_latent: expected a scalar or C = {channels} per-channel values, got {len(values)} values"
        )
    return [float(v) for v in values] * (channels // len(values))


class RefinerLightningModule(L.LightningModule):
    """Train a ``VideoRefiner`` initialised from a base video branch of the preset.

    Args:
        preset: model size (``skyreels_mmdit_blocks.joint_preset``; its video branch is the base).
        vsa: VSA settings of every block (the ramp, when given, overrides its sparsity per step).
        sparsity_ramp: linear sparsity schedule, or None to keep ``vsa.sparsity``.
        sampler: training σ distribution (default uniform, the paper's).
            ``vsa``, ``sparsity_ramp`` and ``sampler`` also accept the plain dicts this module saves
            in ``hparams`` (what ``load_from_checkpoint`` passes back); unknown keys raise.
        base_weights: safetensors state dict of the base video branch; None = a freshly
            initialised base (the tiny recipe: no trained base model exists here).
        learning_rate, weight_decay: AdamW.
        activation_checkpointing: recompute every block in backward.
        validation_sigmas: σ values of the validation loss.
        black_latent: eq. 7's black-frame latent, filling ``I`` where ``M = 0``: one value for
            every channel, or C per-channel values. 0 suits the zero-mean procedural latents; with
            a real VAE use the (normalised) latent of one encoded black frame, which is not 0.
        seed: seed of the training draws (σ and ε per step, step 2 of the module docstring).
    """

    def __init__(
        self,
        *,
        preset: PresetName = "tiny",
        vsa: VSAConfig | Mapping[str, Any],
        sparsity_ramp: SparsityRamp | Mapping[str, Any] | None = None,
        sampler: TimestepSamplerConfig | Mapping[str, Any] | None = None,
        base_weights: str | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        activation_checkpointing: bool = False,
        validation_sigmas: tuple[float, ...] = (0.25, 0.5, 0.75),
        black_latent: float | list[float] = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        vsa = as_vsa_config(vsa)
        sparsity_ramp = as_sparsity_ramp(sparsity_ramp)
        sampler = as_sampler_config(sampler)
        if sparsity_ramp is not None and vsa.sparsity is None:
            raise ValueError("sparsity_ramp needs vsa.sparsity (not top_k) to be set")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        base_config = joint_preset(preset).video
        channels = base_config.out_channels
        black = _black_latent(black_latent, channels)
        # Plain data in hparams: checkpoints load without unpickling our classes (hparams.py).
        self.save_hyperparameters(
            {
                "preset": preset,
                "vsa": to_hparams(vsa),
                "sparsity_ramp": None if sparsity_ramp is None else to_hparams(sparsity_ramp),
                "sampler": to_hparams(sampler),
                "base_weights": base_weights,
                "learning_rate": learning_rate,
                "weight_decay": weight_decay,
                "activation_checkpointing": activation_checkpointing,
                "validation_sigmas": list(validation_sigmas),
                "black_latent": float(black_latent) if isinstance(black_latent, int | float) else black,
                "seed": seed,
            }
        )
        base = MMDiTBranch(base_config)
        if base_weights is not None:
            base.load_state_dict(load_file(base_weights), strict=True)
        self.refiner = refiner_from_base(base, vsa=vsa)
        self.refiner.set_activation_checkpointing(activation_checkpointing)
        self.ramp, self.sampler = sparsity_ramp, sampler
        self.validation_sigmas = tuple(float(s) for s in validation_sigmas)
        # Not in the state dict (it is an hparam); a buffer so that it follows the module's device.
        self.register_buffer("black_latent", torch.tensor(black).view(1, channels, 1, 1, 1), persistent=False)

    def configure_model(self) -> None:
        """Lightning calls this on every rank before the optimizers exist. Under
        ``skyreels_v4.scale.lightning.SkyReelsParallelStrategy`` it applies ``parallelize`` to the
        refiner (Ulysses SP over its video tokens when ``sp`` > 1, FSDP2 per block, mixed precision,
        activation checkpointing, regional compile); under any other strategy it does nothing."""
        from skyreels_v4.scale.lightning import parallelize_module

        parallelize_module(self, "refiner")

    def _condition(self, batch: dict[str, Tensor]) -> RefinerCondition:
        high_res = batch["high_res"]
        indices = batch["keyframe_indices"]
        if not bool((indices == indices[:1]).all()):
            raise ValueError("keyframe_indices must be the same for every sample of a batch")
        return build_refiner_condition(
            batch["low_res"],
            size=tuple(high_res.shape[2:]),
            black_latent=self.black_latent,
            keyframe_latents=batch["keyframes"],
            keyframe_indices=[int(i) for i in indices[0]],
            source_latents=high_res,
            keep_mask=batch["keep_mask"],
        )

    def _predict(
        self, batch: dict[str, Tensor], condition: RefinerCondition, noisy: Tensor, sigma: Tensor
    ) -> Tensor:
        return self.refiner(
            condition.concat(noisy),
            timestep=sigma_to_timestep(sigma),
            text_tokens=batch["text_tokens"],
            text_mask=batch["text_mask"],
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.ramp is not None:
            sparsity = self.ramp(int(self.global_step))
            self.refiner.set_sparsity(sparsity)
            self.log("train/sparsity", sparsity, on_step=True, on_epoch=False)

    def flow_matching_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """Steps 1-3 of the module docstring on one batch; σ and ε from ``generator`` (CPU; the
        global RNG when None)."""
        x0 = batch["high_res"]
        condition = self._condition(batch)
        # Video tokens of the refiner's sequence, for a token-count-dependent shift (ShiftRule.TOKEN_SQRT).
        patch = self.refiner.config.branch.patch_size
        num_tokens = math.prod(size // p for size, p in zip(x0.shape[2:], patch, strict=True))
        sigma = sample_training_sigmas(
            x0.shape[0], self.sampler, generator=generator, device=x0.device, num_tokens=num_tokens
        )
        noise = None
        if generator is not None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
        noised = noise_latents(x0, sigma, noise=noise)
        prediction = self._predict(batch, condition, noised.noisy, sigma)
        return masked_mse(prediction, noised.target, condition.loss_mask)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.flow_matching_loss(
            batch, step_generator(int(self.hparams["seed"]), int(self.global_step), self._trainer)
        )
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x0 = batch["high_res"]
        condition = self._condition(batch)
        generator = torch.Generator(device=x0.device).manual_seed(batch_idx)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        losses = []
        for value in self.validation_sigmas:
            sigma = torch.full((x0.shape[0],), value, device=x0.device)
            noised = noise_latents(x0, sigma, noise=noise)
            prediction = self._predict(batch, condition, noised.noisy, sigma)
            losses.append(masked_mse(prediction, noised.target, condition.loss_mask))
            if value == 0.5:
                estimate = noised.noisy - 0.5 * prediction
                self.log("val/x0_mse", masked_mse(estimate, x0, condition.loss_mask), sync_dist=True)
                self.log(
                    "val/interp_mse", masked_mse(condition.upsampled, x0, condition.loss_mask), sync_dist=True
                )
        # sync_dist: on several replicas each validates its share; the logged value is their mean.
        self.log("val/loss", torch.stack(losses).mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adamw(
            self.refiner.parameters(),
            trainer=self._trainer,
            lr=self.hparams["learning_rate"],
            weight_decay=self.hparams["weight_decay"],
        )
