"""The joint video + audio flow-matching objective (paper section 3.1, eq. 6), in the σ convention.

Eq. 6 regresses both branches onto ``z0 - ε`` at a shared ``t ~ U(0, 1)``. In our convention the
targets are ``u = ε - x0`` (the sign flips, the squared error does not) and

    L = w_v · mean_{counted video elements} (û_v - u_v)²  +  w_a · mean_{counted audio elements} (û_a - u_a)²

**Loss masks** are not condition masks. A loss mask says which elements are *counted*: 1 = counted,
0 = excluded (conditioned frames/regions, prepended reference latents, padding). It broadcasts
against the prediction (e.g. ``[B, 1, T, H, W]`` for a video ``[B, C, T, H, W]``), and the masked
mean divides by the number of counted *elements* after broadcasting (a ``[B, 1, T, H, W]`` mask
counts C elements per position). The whole batch is pooled into one mean. A condition mask M of eq. 7
(1 = condition) becomes a loss mask with :func:`loss_mask_from_condition_mask`.

Either modality may be absent (``None``) for the single-modality pretraining stages (paper 4.1, 4.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import Tensor

from skyreels_flow_matching.conventions import add_noise, velocity_target
from skyreels_flow_matching.timestep_sampling import ShiftRule, TimestepSamplerConfig, sample_training_sigmas

__all__ = [
    "JointFlowMatching",
    "JointFlowMatchingConfig",
    "JointLoss",
    "JointNoisedLatents",
    "NoisedLatents",
    "TimestepSharing",
    "joint_flow_matching_loss",
    "loss_mask_from_condition_mask",
    "masked_mse",
    "noise_latents",
]


class TimestepSharing(str, enum.Enum):
    """Whether video and audio share one σ per sample (the paper) or draw their own."""

    SHARED = "shared"
    INDEPENDENT = "independent"


@dataclass(frozen=True, kw_only=True)
class JointFlowMatchingConfig:
    """Configuration of :class:`JointFlowMatching`.

    Attributes:
        sampler: training σ distribution and shift.
        timestep_sharing: one σ per sample for both modalities (default, eq. 6) or one each. Shared σ
            is shifted by the video token count (the audio count when a batch has no video);
            independent σ by each modality's own count.
        video_weight, audio_weight: w_v, w_a (eq. 6 uses 1 and 1).
    """

    sampler: TimestepSamplerConfig = field(default_factory=TimestepSamplerConfig)
    timestep_sharing: TimestepSharing = TimestepSharing.SHARED
    video_weight: float = 1.0
    audio_weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.sampler, TimestepSamplerConfig):
            raise TypeError(f"sampler must be a TimestepSamplerConfig, got {type(self.sampler).__name__}")
        if not isinstance(self.timestep_sharing, TimestepSharing):
            raise TypeError(f"timestep_sharing must be a TimestepSharing, got {self.timestep_sharing!r}")
        for name in ("video_weight", "audio_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class NoisedLatents:
    """One modality prepared for a training step: ``noisy [B, ...]``, ``sigma [B]``, ``target [B, ...]``."""

    noisy: Tensor
    sigma: Tensor
    target: Tensor


@dataclass(frozen=True, kw_only=True)
class JointNoisedLatents:
    """Both modalities of a training step; a modality missing from the batch is ``None``."""

    video: NoisedLatents | None
    audio: NoisedLatents | None


@dataclass(frozen=True, kw_only=True)
class JointLoss:
    """Weighted total and the unweighted per-modality losses (``None`` for an absent modality)."""

    total: Tensor
    video: Tensor | None
    audio: Tensor | None


def noise_latents(
    x0: Tensor, sigma: Tensor, *, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> NoisedLatents:
    """Noise clean latents to ``x_σ`` and build the target ``u = ε - x0``.

    Args:
        x0: clean latents ``[B, ...]``.
        sigma: ``[B]`` noise levels.
        noise: ε (same shape as ``x0``); drawn from N(0, I) in ``x0``'s dtype on ``x0``'s device
            with ``generator`` (which must then live on that device) when omitted.
    """
    if not isinstance(sigma, Tensor) or sigma.ndim != 1 or sigma.shape[0] != x0.shape[0]:
        shape = list(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"sigma must be a tensor of shape [B] = [{x0.shape[0]}], got {shape}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return NoisedLatents(noisy=add_noise(x0, noise, sigma), sigma=sigma, target=velocity_target(x0, noise))


def loss_mask_from_condition_mask(condition_mask: Tensor, *, valid_mask: Tensor | None = None) -> Tensor:
    """Loss mask (1 = counted) from a condition mask (1 = condition, 0 = generate; eq. 7).

    ``valid_mask`` (1 = real token, 0 = padding) must broadcast against ``condition_mask``. Both
    must hold only 0 and 1 (checked with one host sync, skipped while torch.compile traces).
    """
    for name, mask in (("condition_mask", condition_mask), ("valid_mask", valid_mask)):
        if mask is not None and not torch.compiler.is_compiling() and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"{name}: expected only 0 and 1, got values {mask.unique()[:8].tolist()}")
    loss_mask = 1.0 - condition_mask.to(torch.float32)
    if valid_mask is not None:
        loss_mask = loss_mask * valid_mask.to(torch.float32)
    return loss_mask


def masked_mse(prediction: Tensor, target: Tensor, loss_mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the counted elements, computed in float32.

    Args:
        prediction, target: ``[B, ...]`` of equal shape.
        loss_mask: bool or numeric, same number of dims as ``prediction``, each dim equal or 1;
            1 = counted, 0 = excluded (other non-negative values weight the element).
    Returns:
        A 0-d tensor: ``sum(mask·(p - t)²) / sum(mask broadcast to p)``; 0 when nothing is counted.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {list(prediction.shape)} and "
            f"{list(target.shape)}"
        )
    squared_error = (prediction.to(torch.float32) - target.to(torch.float32)).square()
    if loss_mask is None:
        return squared_error.mean()
    if loss_mask.is_complex():
        raise TypeError(f"loss_mask must be bool, integer or floating point, got {loss_mask.dtype}")
    if loss_mask.ndim != prediction.ndim or any(
        m not in (1, p) for m, p in zip(loss_mask.shape, prediction.shape)
    ):
        raise ValueError(
            f"loss_mask must have {prediction.ndim} dims, each 1 or equal to the prediction's "
            f"{list(prediction.shape)}, got {list(loss_mask.shape)}"
        )
    mask = loss_mask.to(device=prediction.device, dtype=torch.float32)
    if not torch.compiler.is_compiling() and bool((~torch.isfinite(mask) | (mask < 0)).any()):
        raise ValueError("loss_mask: expected finite non-negative weights, got negative, inf or NaN entries")
    # Elements a size-1 mask dim stands for: the count is over the broadcast mask.
    repeats = 1
    for m, p in zip(mask.shape, prediction.shape):
        if m == 1:
            repeats *= p
    count = mask.sum() * repeats
    total = (squared_error * mask).sum()
    return total / torch.where(count > 0, count, torch.ones_like(count))


def joint_flow_matching_loss(
    *,
    video_prediction: Tensor | None,
    audio_prediction: Tensor | None,
    video_target: Tensor | None,
    audio_target: Tensor | None,
    video_loss_mask: Tensor | None = None,
    audio_loss_mask: Tensor | None = None,
    video_weight: float = 1.0,
    audio_weight: float = 1.0,
) -> JointLoss:
    """Eq. 6 over the present modalities: ``total = w_v·L_v + w_a·L_a``.

    Args:
        video_prediction, video_target: ``[B, C, T, H, W]`` (or any ``[B, ...]``), or both ``None``.
        audio_prediction, audio_target: ``[B, C, L]``, or both ``None``.
        video_loss_mask, audio_loss_mask: loss masks (see :func:`masked_mse`), 1 = counted.
        video_weight, audio_weight: w_v, w_a.
    """
    losses: dict[str, Tensor | None] = {}
    total: Tensor | None = None
    for name, prediction, target, mask, weight in (
        ("video", video_prediction, video_target, video_loss_mask, video_weight),
        ("audio", audio_prediction, audio_target, audio_loss_mask, audio_weight),
    ):
        if (prediction is None) != (target is None):
            raise ValueError(
                f"{name}_prediction and {name}_target must both be tensors or both be None, got "
                f"{type(prediction).__name__} and {type(target).__name__}"
            )
        if prediction is None:
            if mask is not None:
                raise ValueError(f"{name}_loss_mask was given but {name}_prediction is None")
            losses[name] = None
            continue
        loss = masked_mse(prediction, target, mask)
        losses[name] = loss
        total = weight * loss if total is None else total + weight * loss
    if total is None:
        raise ValueError(
            "at least one of video_prediction and audio_prediction must be a tensor, got None twice"
        )
    return JointLoss(total=total, video=losses["video"], audio=losses["audio"])


class JointFlowMatching:
    """Training objective of the joint model: sample σ, noise both modalities, compute eq. 6.

    Example::

        objective = JointFlowMatching(JointFlowMatchingConfig())
        noised = objective.noise(video_latents, audio_latents, generator=g)
        video_u, audio_u = model(noised.video.noisy, noised.audio.noisy,
                                 video_sigma=noised.video.sigma, audio_sigma=noised.audio.sigma, condition=c)
        loss = objective.loss(video_u, audio_u, noised, video_loss_mask=m).total
    """

    def __init__(self, config: JointFlowMatchingConfig) -> None:
        if not isinstance(config, JointFlowMatchingConfig):
            raise TypeError(f"config must be a JointFlowMatchingConfig, got {type(config).__name__}")
        self.config = config

    def sample_sigmas(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        video_num_tokens: int | None = None,
        audio_num_tokens: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(video_sigma [B], audio_sigma [B])``; the same tensor twice when σ is shared.

        Independent draws take the video σ first, then the audio σ, from the one generator.
        """
        sampler = self.config.sampler
        if self.config.timestep_sharing is TimestepSharing.SHARED:
            tokens = video_num_tokens if video_num_tokens is not None else audio_num_tokens
            sigma = sample_training_sigmas(
                batch_size, sampler, generator=generator, device=device, num_tokens=tokens
            )
            return sigma, sigma
        video_sigma = sample_training_sigmas(
            batch_size, sampler, generator=generator, device=device, num_tokens=video_num_tokens
        )
        audio_sigma = sample_training_sigmas(
            batch_size, sampler, generator=generator, device=device, num_tokens=audio_num_tokens
        )
        return video_sigma, audio_sigma

    def noise(
        self,
        video_latents: Tensor | None,
        audio_latents: Tensor | None,
        *,
        generator: torch.Generator | None = None,
        video_num_tokens: int | None = None,
        audio_num_tokens: int | None = None,
    ) -> JointNoisedLatents:
        """Draw σ, then ε for video, then ε for audio (in that order), and noise both modalities.

        Args:
            video_latents: clean ``[B, C, T, H, W]`` or ``None``; audio_latents: ``[B, C, L]`` or ``None``.
            generator: one generator for σ and ε; it must live on the latents' device.
            video_num_tokens, audio_num_tokens: token counts for a token-dependent shift.
        """
        present = [x for x in (video_latents, audio_latents) if x is not None]
        if not present:
            raise ValueError(
                "at least one of video_latents and audio_latents must be a tensor, got None twice"
            )
        batch_size, device = present[0].shape[0], present[0].device
        if len(present) == 2 and audio_latents.shape[0] != batch_size:
            raise ValueError(
                f"video_latents and audio_latents must share the batch size, got {batch_size} and "
                f"{audio_latents.shape[0]}"
            )
        shared = self.config.timestep_sharing is TimestepSharing.SHARED
        if (
            shared
            and video_latents is not None
            and video_num_tokens is None
            and self.config.sampler.shift.rule is not ShiftRule.FIXED
        ):
            # The shared σ follows the video's token count; the audio count is only for audio-only
            # batches, so falling back to it here would silently pick the wrong shift.
            raise ValueError(
                f"video_num_tokens: the shift rule {self.config.sampler.shift.rule.value!r} with a shared "
                "σ needs the video token count when the batch has video, got None"
            )
        video_sigma, audio_sigma = self.sample_sigmas(
            batch_size,
            generator=generator,
            device=device,
            video_num_tokens=video_num_tokens,
            audio_num_tokens=audio_num_tokens,
        )
        video = audio = None
        if video_latents is not None:
            video = noise_latents(video_latents, video_sigma, generator=generator)
        if audio_latents is not None:
            audio = noise_latents(audio_latents, audio_sigma, generator=generator)
        return JointNoisedLatents(video=video, audio=audio)

    def loss(
        self,
        video_prediction: Tensor | None,
        audio_prediction: Tensor | None,
        noised: JointNoisedLatents,
        *,
        video_loss_mask: Tensor | None = None,
        audio_loss_mask: Tensor | None = None,
    ) -> JointLoss:
        """Eq. 6 with the configured weights, against the targets stored in ``noised``."""
        return joint_flow_matching_loss(
            video_prediction=video_prediction,
            audio_prediction=audio_prediction,
            video_target=None if noised.video is None else noised.video.target,
            audio_target=None if noised.audio is None else noised.audio.target,
            video_loss_mask=video_loss_mask,
            audio_loss_mask=audio_loss_mask,
            video_weight=self.config.video_weight,
            audio_weight=self.config.audio_weight,
        )
