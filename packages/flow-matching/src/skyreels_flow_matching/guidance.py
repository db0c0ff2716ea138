"""Classifier-free guidance for the joint model, per modality, as a denoiser any solver can use.

For each modality m (video, audio) with scale ``w_m``, negative condition ``c⁻_m`` and rescale φ_m:

    g_m = u_m(x, σ, c⁻_m) + w_m · (u_m(x, σ, c) - u_m(x, σ, c⁻_m))         (Ho & Salimans 2022)
    g_m ← φ_m · g_m · std(u_m(x, σ, c)) / std(g_m) + (1 - φ_m) · g_m       (Lin et al. 2023, eq. 15-16)

CFG on the velocity equals CFG on the x0 or ε predictions (both are affine in u with weights that
sum to 1); the std rescale is applied to the velocity. Guidance is applied to a sample only while
its σ lies in ``[lo, hi]`` (a guidance interval; outside it the conditional velocity is returned
and, when no sample of the batch needs guidance, the negative forward is skipped).

One forward serves both modalities of a branch, because the joint model always returns both: the
video and audio negatives share one forward when they are the same object, and a modality with
``w = 1`` needs none. By default cond and negatives run as one batch (``BATCHED``, see
:func:`~skyreels_flow_matching.concat_conditions`); ``SEQUENTIAL`` runs them one after another for
memory.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import torch
from torch import Tensor

from skyreels_flow_matching.condition_batching import concat_conditions
from skyreels_flow_matching.conventions import broadcast_sigma

__all__ = [
    "GuidanceBatching",
    "JointGuidanceConfig",
    "JointGuidedDenoiser",
    "JointVelocityModel",
    "ModalityGuidanceConfig",
    "classifier_free_guidance",
    "rescale_guidance",
]

ConditionT = TypeVar("ConditionT")
ConditionT_contra = TypeVar("ConditionT_contra", contravariant=True)


class JointVelocityModel(Protocol[ConditionT_contra]):
    """What a joint video + audio model looks like to this package.

    Args:
        video_latents: noisy video ``[B, C, T, H, W]``.
        audio_latents: noisy audio ``[B, C, L]``.
        video_sigma, audio_sigma: ``[B]`` float32 noise levels in [0, 1] (the model embeds
            ``1000·σ``, see :func:`~skyreels_flow_matching.sigma_to_timestep`); equal during sampling,
            separate so that training may draw them independently.
        condition: text embeddings, masks, references, ...; every tensor batched on dim 0.
    Returns:
        ``(video_velocity, audio_velocity)`` with the shapes of the latents, ``u = ε - x0``.
    """

    def __call__(
        self,
        video_latents: Tensor,
        audio_latents: Tensor,
        *,
        video_sigma: Tensor,
        audio_sigma: Tensor,
        condition: ConditionT_contra,
    ) -> tuple[Tensor, Tensor]: ...


class GuidanceBatching(str, enum.Enum):
    """Run the conditional and negative branches as one batch or one after another."""

    BATCHED = "batched"
    SEQUENTIAL = "sequential"


@dataclass(frozen=True, kw_only=True)
class ModalityGuidanceConfig:
    """Guidance of one modality.

    Attributes:
        scale: w; 1 = no guidance (no negative forward), 0 = unconditional.
        rescale: φ in [0, 1] of Lin et al. 2023; 0 = plain CFG.
        sigma_interval: ``(lo, hi)``: guide only while ``lo <= σ <= hi``.
    """

    scale: float = 1.0
    rescale: float = 0.0
    sigma_interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a finite float, got {self.scale!r}")
        if not (isinstance(self.rescale, (int, float)) and 0.0 <= self.rescale <= 1.0):
            raise ValueError(f"rescale must be a float in [0, 1], got {self.rescale!r}")
        interval = self.sigma_interval
        if not (
            isinstance(interval, tuple)
            and len(interval) == 2
            and all(isinstance(v, (int, float)) for v in interval)
            and 0.0 <= interval[0] <= interval[1] <= 1.0
        ):
            raise ValueError(
                f"sigma_interval must be a tuple (lo, hi) with 0 <= lo <= hi <= 1, got {interval!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.scale != 1.0


@dataclass(frozen=True, kw_only=True)
class JointGuidanceConfig:
    """Separate video and audio guidance, and how the branches are batched."""

    video: ModalityGuidanceConfig = field(default_factory=ModalityGuidanceConfig)
    audio: ModalityGuidanceConfig = field(default_factory=ModalityGuidanceConfig)
    batching: GuidanceBatching = GuidanceBatching.BATCHED

    def __post_init__(self) -> None:
        for name in ("video", "audio"):
            if not isinstance(getattr(self, name), ModalityGuidanceConfig):
                raise TypeError(f"{name} must be a ModalityGuidanceConfig, got {getattr(self, name)!r}")
        if not isinstance(self.batching, GuidanceBatching):
            raise TypeError(f"batching must be a GuidanceBatching, got {self.batching!r}")


def classifier_free_guidance(conditional: Tensor, unconditional: Tensor, scale: float) -> Tensor:
    """``unconditional + scale · (conditional - unconditional)``."""
    return unconditional + scale * (conditional - unconditional)


def rescale_guidance(guided: Tensor, conditional: Tensor, rescale: float) -> Tensor:
    """Lin et al. 2023 (eq. 15-16): match the per-sample std of ``guided [B, ...]`` to ``conditional``.

    Returns ``φ·guided·std(conditional)/std(guided) + (1 - φ)·guided``, std over all non-batch dims.
    """
    dims = tuple(range(1, guided.ndim))
    ratio = conditional.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return rescale * (guided * ratio) + (1.0 - rescale) * guided


class JointGuidedDenoiser(Generic[ConditionT]):
    """Wrap a :class:`JointVelocityModel` into a solver ``model_fn((video, audio), sigma) -> (u_v, u_a)``.

    Args:
        model: the joint model.
        condition: the positive condition.
        video_negative_condition, audio_negative_condition: negatives; required for a modality whose
            scale is not 1. Pass the same object to both to share one forward.
        config: scales, rescale, intervals and batching.
    """

    def __init__(
        self,
        model: JointVelocityModel[ConditionT],
        *,
        condition: ConditionT,
        video_negative_condition: ConditionT | None = None,
        audio_negative_condition: ConditionT | None = None,
        config: JointGuidanceConfig | None = None,
    ) -> None:
        config = JointGuidanceConfig() if config is None else config
        if not isinstance(config, JointGuidanceConfig):
            raise TypeError(f"config must be a JointGuidanceConfig, got {type(config).__name__}")
        for name, negative, modality in (
            ("video_negative_condition", video_negative_condition, config.video),
            ("audio_negative_condition", audio_negative_condition, config.audio),
        ):
            if modality.enabled and negative is None:
                raise ValueError(
                    f"{name} is required when its guidance scale is {modality.scale} (not 1), got None"
                )
        self.model = model
        self.condition = condition
        self.video_negative_condition = video_negative_condition
        self.audio_negative_condition = audio_negative_condition
        self.config = config

    def __call__(self, x: tuple[Tensor, Tensor], sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Guided ``(video_velocity, audio_velocity)`` at ``x = (video [B, ...], audio [B, ...])``, σ [B]."""
        if not (isinstance(x, tuple) and len(x) == 2 and all(isinstance(t, Tensor) for t in x)):
            raise TypeError(
                f"x must be a tuple (video_latents, audio_latents) of tensors, got {type(x).__name__}"
            )
        video, audio = x
        batch = video.shape[0]
        if not isinstance(sigma, Tensor) or sigma.shape != (batch,) or audio.shape[0] != batch:
            raise ValueError(
                f"sigma must have shape [B] for video {list(video.shape)} and audio {list(audio.shape)}, "
                f"got {list(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__}"
            )
        video_inside = self._inside_interval(self.config.video, sigma)
        audio_inside = self._inside_interval(self.config.audio, sigma)

        # 1. Which branches this σ needs: the conditional one, then at most two negatives.
        branches = [self.condition]
        video_branch = audio_branch = None
        if video_inside is not None:
            branches.append(self.video_negative_condition)
            video_branch = len(branches) - 1
        if audio_inside is not None:
            if video_branch is not None and self.audio_negative_condition is self.video_negative_condition:
                audio_branch = video_branch
            else:
                branches.append(self.audio_negative_condition)
                audio_branch = len(branches) - 1

        # 2. Forward passes.
        outputs = self._run_branches(branches, video, audio, sigma)

        # 3. Combine per modality.
        video_velocity, audio_velocity = outputs[0]
        if video_branch is not None:
            video_negative = outputs[video_branch][0]
            video_velocity = self._guide(self.config.video, video_velocity, video_negative, video_inside)
        if audio_branch is not None:
            audio_negative = outputs[audio_branch][1]
            audio_velocity = self._guide(self.config.audio, audio_velocity, audio_negative, audio_inside)
        return video_velocity, audio_velocity

    @staticmethod
    def _inside_interval(guidance: ModalityGuidanceConfig, sigma: Tensor) -> Tensor | None:
        """Bool ``[B]`` of samples to guide, or None when no sample needs this modality's guidance."""
        if not guidance.enabled:
            return None
        lo, hi = guidance.sigma_interval
        inside = (sigma >= lo) & (sigma <= hi)
        return inside if bool(inside.any()) else None

    def _run_branches(
        self, branches: list[ConditionT], video: Tensor, audio: Tensor, sigma: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        batch = video.shape[0]
        if self.config.batching is GuidanceBatching.SEQUENTIAL or len(branches) == 1:
            return [self._forward(video, audio, sigma, condition) for condition in branches]
        k = len(branches)
        condition = concat_conditions(branches)
        video_out, audio_out = self._forward(
            torch.cat([video] * k), torch.cat([audio] * k), torch.cat([sigma] * k), condition
        )
        return list(zip(video_out.split(batch), audio_out.split(batch)))

    def _forward(
        self, video: Tensor, audio: Tensor, sigma: Tensor, condition: ConditionT
    ) -> tuple[Tensor, Tensor]:
        out = self.model(video, audio, video_sigma=sigma, audio_sigma=sigma, condition=condition)
        if not (
            isinstance(out, tuple)
            and len(out) == 2
            and isinstance(out[0], Tensor)
            and isinstance(out[1], Tensor)
            and out[0].shape == video.shape
            and out[1].shape == audio.shape
        ):
            if isinstance(out, tuple):
                got = [list(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in out]
            else:
                got = type(out).__name__
            raise ValueError(
                f"model must return (video_velocity {list(video.shape)}, audio_velocity "
                f"{list(audio.shape)}), got {got}"
            )
        return out

    @staticmethod
    def _guide(
        guidance: ModalityGuidanceConfig, conditional: Tensor, negative: Tensor, inside: Tensor
    ) -> Tensor:
        guided = classifier_free_guidance(conditional, negative, guidance.scale)
        if guidance.rescale > 0.0:
            guided = rescale_guidance(guided, conditional, guidance.rescale)
        if bool(inside.all()):
            return guided
        return torch.where(broadcast_sigma(inside, conditional, name="inside"), guided, conditional)
