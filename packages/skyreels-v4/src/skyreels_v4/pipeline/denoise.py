"""The velocity model the pipeline's guided solver calls: ``JointDenoiser`` plus what a task says about an
absent modality (paper 3.2; training's task table, ``skyreels_v4.training.tasks``).

- t2v: the audio is absent. Training shows the model σ = 1 audio noise (no loss) for t2v, so sampling
  holds the audio at its initial noise, σ = 1, velocity 0 (it is not denoised, and needs no guidance).
- t2a: the video is absent: held at σ = 1 the same way.
- t2v when the video branch reads nothing from the audio (every eq. 5 ``video_from_audio`` output
  projection is exactly zero, as right after ``skyreels-v4 convert`` from a text-to-video checkpoint):
  ``v + 0 = v``, so the audio branch and the exchanges cannot change the video; the video branch runs
  alone (``VideoOnlyDenoiser``), bit-identical and without the audio branch's cost.

Shape legend as ``skyreels_v4.model.transformer``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from skyreels_flow_matching import JointGuidanceConfig, ModalityGuidanceConfig, sigma_to_timestep
from skyreels_mmdit_blocks import is_zero_linear
from skyreels_v4.errors import NonFiniteError
from skyreels_v4.model import JointDenoiser, ModelCondition, PredictionType, prediction_to_velocity
from skyreels_v4.pipeline.request import Task

__all__ = ["HeldModalityDenoiser", "VideoOnlyDenoiser", "denoiser_for_task", "video_reads_audio"]


def video_reads_audio(transformer: torch.nn.Module) -> bool:
    """False when every eq. 5 video-from-audio output projection is a plain Linear that is exactly zero
    (one host sync per tensor; called once per ``sample``). A LoRA-wrapped or quantised projection
    counts as reading the audio: its output is not known to be zero."""
    return not all(is_zero_linear(e.video_from_audio.out) for e in getattr(transformer, "exchanges", ()))


class HeldModalityDenoiser:
    """``JointDenoiser`` with one modality held at σ = 1 (its velocity 0): t2v's audio, t2a's video."""

    def __init__(self, inner: JointDenoiser, *, hold: str) -> None:
        if hold not in ("video", "audio"):
            raise ValueError(f"hold: expected 'video' or 'audio', got {hold!r}")
        self.inner, self.hold = inner, hold

    def __call__(
        self,
        video_latents: Tensor,
        audio_latents: Tensor,
        *,
        video_sigma: Tensor,
        audio_sigma: Tensor,
        condition: ModelCondition,
    ) -> tuple[Tensor, Tensor]:
        if self.hold == "audio":
            audio_sigma = torch.ones_like(audio_sigma)
        else:
            video_sigma = torch.ones_like(video_sigma)
        u_video, u_audio = self.inner(
            video_latents,
            audio_latents,
            video_sigma=video_sigma,
            audio_sigma=audio_sigma,
            condition=condition,
        )
        if self.hold == "audio":
            return u_video, torch.zeros_like(u_audio)
        return torch.zeros_like(u_video), u_audio


class VideoOnlyDenoiser:
    """The video branch alone, for t2v when the video reads nothing from the audio (module doc).

    Returns the same video velocity as ``JointDenoiser`` (conditioned cells on their exact path) and a
    zero audio velocity (the audio is held at σ = 1)."""

    def __init__(self, transformer: torch.nn.Module, *, check_finite: bool = True) -> None:
        self.transformer, self.check_finite = transformer, check_finite

    def __call__(
        self,
        video_latents: Tensor,
        audio_latents: Tensor,
        *,
        video_sigma: Tensor,
        audio_sigma: Tensor,
        condition: ModelCondition,
    ) -> tuple[Tensor, Tensor]:
        c, model = condition, self.transformer
        video_sigma = torch.where(c.video_given, torch.zeros_like(video_sigma), video_sigma)
        dtype = next(model.parameters()).dtype
        video_in = torch.cat(
            [
                video_latents,
                c.conditional_latents.to(video_latents.dtype),
                c.latent_mask.to(video_latents.dtype),
            ],
            dim=1,
        )
        out = model.video(
            video_in.to(dtype),
            timestep=sigma_to_timestep(video_sigma).to(dtype),
            text_tokens=c.text_tokens.to(dtype),
            text_mask=c.text_mask,
            pooled_text=None if c.pooled_text is None else c.pooled_text.to(dtype),
            guidance=c.guidance if model.config.video.guidance_embedding else None,
            reference_latents=None if c.video_reference is None else c.video_reference.to(dtype),
            positions=c.video_positions,
            latent_key_mask=c.video_key_mask,
        ).to(video_latents.dtype)
        prediction = getattr(model, "prediction", PredictionType.VELOCITY)
        u_video = prediction_to_velocity(prediction, out, video_latents, video_sigma)
        if self.check_finite and not bool(torch.isfinite(u_video).all()):
            raise NonFiniteError(
                "the transformer returned NaN/inf velocities (non-finite weights or inputs); "
                "check the model folder and the conditioning inputs"
            )
        keep = c.latent_mask.to(torch.bool)
        u_video = torch.where(keep, (c.condition_noise - c.conditional_latents).to(u_video.dtype), u_video)
        return u_video, torch.zeros_like(audio_latents)


def denoiser_for_task(
    transformer: torch.nn.Module,
    task: Task,
    guidance: JointGuidanceConfig,
    *,
    packed_keyframes: bool = False,
) -> tuple[object, JointGuidanceConfig]:
    """The velocity model for ``task`` and the guidance it needs (no guidance for a held modality).
    ``packed_keyframes``: the video state carries joint keyframes (only ``JointDenoiser`` reads them)."""
    off = ModalityGuidanceConfig(scale=1.0)
    if task is Task.T2V:
        guidance = replace(guidance, audio=off)
        if not packed_keyframes and not video_reads_audio(transformer):
            return VideoOnlyDenoiser(transformer), guidance
        return HeldModalityDenoiser(JointDenoiser(transformer), hold="audio"), guidance
    if task is Task.T2A:
        return HeldModalityDenoiser(JointDenoiser(transformer), hold="video"), replace(guidance, video=off)
    return JointDenoiser(transformer), guidance
