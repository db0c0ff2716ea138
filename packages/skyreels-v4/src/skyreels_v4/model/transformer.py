"""The SkyReels-V4 transformer (paper 3.1-3.3) and the denoiser the samplers and the trainer call.

``SkyReelsV4Transformer`` is the two-branch joint transformer of skyreels-mmdit-blocks (video branch
over ``Concat(V, I, M)`` of eq. 7, audio branch, eq. 4-5 exchange, in-context references of eq. 8)
plus its folder format (``config.json`` + sharded safetensors, loaded on the meta device).

``JointDenoiser`` is the one place that turns a task's conditioning into a forward pass; the
pipeline (guided sampling) and the training module both go through it, so inference sees exactly the
inputs training saw:

- the video branch reads ``Concat(V, I, M)``; on conditioned cells (M = 1) the returned velocity is
  the exact velocity ``ε₀ - I`` of the straight path from the condition ``I`` to its noise ``ε₀``,
  so every solver keeps those cells on ``(1-σ)·I + σ·ε₀`` and ends on ``I`` (conditioned content is
  kept, not re-generated);
- a modality that is *given* whole (v2a: the video; a2v: the audio) is embedded at σ = 0 and its
  velocity is 0, so it stays the clean condition through the whole solve.

Shape legend: B batch, C video latent channels, T/h/w latent grid, Ca audio channels, La audio latents.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from skyreels_flow_matching import sigma_to_timestep
from skyreels_mmdit_blocks import (
    JointAudioVideoTransformer,
    JointAudioVideoTransformerConfig,
    VideoGrid,
    joint_preset,
    unpatchify_video,
)
from skyreels_v4.errors import NonFiniteError, SkyReelsError
from skyreels_v4.model.config_io import from_plain, to_plain
from skyreels_v4.model.keyframes import (
    KeyframeLayout,
    keyframe_token_positions,
    pack_keyframes,
    unpack_keyframes,
)
from skyreels_v4.model.video_sparse import (
    VideoSelfAttention,
    VideoSelfAttentionConfig,
    enable_video_sparse_attention,
)
from skyreels_v4.model.weights import build_and_load, read_component_config, save_component

__all__ = [
    "SKIP_DATA_STD",
    "JointDenoiser",
    "ModelCondition",
    "PredictionType",
    "SkyReelsV4Transformer",
    "prediction_target",
    "prediction_to_velocity",
    "transformer_preset",
]


class PredictionType(str, enum.Enum):
    """What the network's output means. The public checkpoints predict the velocity ``u = ε - x0``;
    tiny models trained from scratch learn faster predicting ``x0`` (docs/training.md).

    ``x0_skip``: ``x0`` with the preconditioning of Karras et al. (2022, EDM) carried over to the
    flow path ``x_σ = a·x0 + b·ε`` (a = 1 - σ, b = σ): ``x̂0 = c_skip·x_σ + c_out·F`` with
    ``c_skip = a·d² / (a²d² + b²)``, ``c_out = b·d / sqrt(a²d² + b²)`` and the data std d =
    ``SKIP_DATA_STD``. The input passes through at low σ (no capacity is spent on copying it) and the
    network's target ``(x0 - c_skip·x_σ) / c_out`` has unit variance at every σ.
    """

    VELOCITY = "velocity"
    X0 = "x0"
    NOISE = "noise"
    X0_SKIP = "x0_skip"


#: d of ``PredictionType.X0_SKIP``: EDM's value for data in [-1, 1] (fixed, so a folder's
#: ``prediction`` alone defines the conversion).
SKIP_DATA_STD = 0.5

# σ is clamped away from the singular end of a conversion (x0: σ = 0; noise: σ = 1).
_MIN_DENOMINATOR = 1e-3


def _skip_coefficients(s: Tensor) -> tuple[Tensor, Tensor]:
    a, b, d2 = 1 - s, s, SKIP_DATA_STD**2
    norm = a * a * d2 + b * b
    return a * d2 / norm, b * SKIP_DATA_STD / norm.sqrt()


def _sigma_like(sigma: Tensor, like: Tensor) -> Tensor:
    return sigma.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def prediction_to_velocity(prediction: PredictionType, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """Exact conversion of a network output to the velocity ``u = ε - x0`` at ``x_σ = (1-σ)x0 + σε``.

    x0: ``u = (x_σ - x0) / σ``; noise: ``u = (ε - x_σ) / (1 - σ)``; velocity: unchanged; x0_skip: the
    x0 rule on ``x̂0 = c_skip·x_σ + c_out·F``.
    """
    if prediction is PredictionType.VELOCITY:
        return output
    s = _sigma_like(sigma, output)
    if prediction is PredictionType.X0_SKIP:
        c_skip, c_out = _skip_coefficients(s)
        output = c_skip * x + c_out * output
        prediction = PredictionType.X0
    if prediction is PredictionType.X0:
        return (x - output) / s.clamp_min(_MIN_DENOMINATOR)
    return (output - x) / (1 - s).clamp_min(_MIN_DENOMINATOR)


def prediction_target(
    prediction: PredictionType, x0: Tensor, noise: Tensor, x: Tensor, sigma: Tensor
) -> Tensor:
    """What the network should output for clean ``x0``, noise ``ε`` and ``x_σ = (1-σ)x0 + σε`` (the
    inverse of :func:`prediction_to_velocity`): x0, ε, ``ε - x0`` or ``(x0 - c_skip·x_σ) / c_out``."""
    if prediction is PredictionType.X0:
        return x0
    if prediction is PredictionType.NOISE:
        return noise
    if prediction is PredictionType.VELOCITY:
        return noise - x0
    c_skip, c_out = _skip_coefficients(_sigma_like(sigma, x))
    return (x0 - c_skip * x) / c_out.clamp_min(_MIN_DENOMINATOR)


def transformer_preset(
    name: str,
    *,
    video_latent_channels: int | None = None,
    audio_latent_channels: int | None = None,
    **changes: object,
) -> JointAudioVideoTransformerConfig:
    """``joint_preset(name)`` (tiny / small / full) sized for the given autoencoders' latent channels
    (the video branch reads ``2C + 1``, eq. 7), with other top-level fields replaced by ``changes``."""
    config = joint_preset(name)  # type: ignore[arg-type]
    video, audio = config.video, config.audio
    for label, value in (
        ("video_latent_channels", video_latent_channels),
        ("audio_latent_channels", audio_latent_channels),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{label}: expected a positive int, got {value!r}")
    if video_latent_channels is not None:
        video = replace(video, in_channels=2 * video_latent_channels + 1, out_channels=video_latent_channels)
    if audio_latent_channels is not None:
        audio = replace(audio, in_channels=audio_latent_channels, out_channels=audio_latent_channels)
    return replace(config, video=video, audio=audio, **changes)


class SkyReelsV4Transformer(JointAudioVideoTransformer):
    """The joint audio-video transformer with ``save_pretrained`` / ``from_pretrained``.

    ``video_attention`` selects the video blocks' self-attention kernel: dense (default, the paper)
    or VSA with zero-initialised gates (``skyreels_v4.model.video_sparse``); stored in config.json.
    """

    CLASS_NAME = "SkyReelsV4Transformer"

    def __init__(
        self,
        config: JointAudioVideoTransformerConfig,
        *,
        prediction: PredictionType = PredictionType.VELOCITY,
        video_attention: VideoSelfAttentionConfig | None = None,
    ) -> None:
        super().__init__(config)
        self.prediction = PredictionType(prediction)
        video_attention = video_attention or VideoSelfAttentionConfig()
        if not isinstance(video_attention, VideoSelfAttentionConfig):
            raise TypeError(
                f"video_attention: expected a VideoSelfAttentionConfig, got {type(video_attention).__name__}"
            )
        self.video_attention = video_attention
        if video_attention.kind is VideoSelfAttention.VSA:
            enable_video_sparse_attention(self, video_attention.vsa)

    @property
    def video_latent_channels(self) -> int:
        """C of V (the video branch reads 2C + 1 channels)."""
        return self.config.video.out_channels

    @property
    def audio_latent_channels(self) -> int:
        return self.config.audio.out_channels

    def save_pretrained(self, folder: str | os.PathLike[str], *, max_shard_size: int | str = "5GB") -> Path:
        """``config.json`` + (sharded) ``model*.safetensors``, written atomically."""
        return save_component(
            self,
            folder,
            class_name=self.CLASS_NAME,
            config={
                "transformer": to_plain(self.config),
                "prediction": self.prediction.value,
                # Written only when not dense, so dense folders stay as they were.
                **(
                    {"video_attention": to_plain(self.video_attention)}
                    if self.video_attention.kind is not VideoSelfAttention.DENSE
                    else {}
                ),
            },
            max_shard_size=max_shard_size,
        )

    @classmethod
    def config_from_folder(cls, folder: str | os.PathLike[str]) -> JointAudioVideoTransformerConfig:
        data = read_component_config(folder, class_name=cls.CLASS_NAME)
        return from_plain(JointAudioVideoTransformerConfig, data.get("transformer"), name="transformer")

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> SkyReelsV4Transformer:
        """Build on the meta device and assign the weights shard by shard (no second copy)."""
        config = cls.config_from_folder(folder)
        data = read_component_config(folder, class_name=cls.CLASS_NAME)
        prediction = from_plain(PredictionType, data.get("prediction", "velocity"), name="prediction")
        attention = from_plain(
            VideoSelfAttentionConfig, data.get("video_attention", {}), name="video_attention"
        )
        model = build_and_load(
            lambda: cls(config, prediction=prediction, video_attention=attention),
            folder,
            dtype=dtype,
            device=device,
        )
        return model.eval()


@dataclass(frozen=True, kw_only=True, eq=False)
class ModelCondition:
    """Everything the transformer takes besides the noisy latents and σ; every tensor batched on dim 0
    (so that ``skyreels_flow_matching.concat_conditions`` can batch guidance branches).

    Attributes:
        text_tokens, text_mask, pooled_text: the shared text encoder's output (paper 3.1).
        conditional_latents: I ``[B, C, T, h, w]`` (eq. 7).
        latent_mask: M ``[B, 1, T, h, w]``, 1 = condition.
        condition_noise: ε₀ ``[B, C, T, h, w]``: the noise the conditioned cells travel to (the solver's
            initial noise there); equal to I where the video is given whole.
        video_given: bool ``[B]``: the whole video is a condition (v2a): embedded at σ = 0.
        audio_conditional_latents, audio_latent_mask, audio_condition_noise: the audio analogue
            (``[B, Ca, La]``, ``[B, 1, La]``, ``[B, Ca, La]``) for a kept audio prefix (extension) or a
            given track (a2v); None = the whole track is generated. The audio branch has no mask
            channel (paper 3.2 trains audio from scratch), so kept audio latents only ride on their
            noise path and steer the rest through attention.
        audio_given: bool ``[B]``: the whole audio is a condition (a2v): embedded at σ = 0.
        video_reference: ``Concat(Z, Z, valid)`` of the packed video references ``[B, 2C + 1, Tr, Hr, Wr]``.
        video_positions: ``[B, R + L, 3]`` RoPE positions (references at negative t, eq. 9).
        video_key_mask: bool ``[B, R + L]`` (False on padding-only reference tokens).
        audio_reference: clean audio reference latents ``[B, Ca, La_ref]``.
        guidance: ``[B]`` distilled guidance (only for a video branch with a guidance embedding).
        keyframes: the video state (and I, M, ε₀ above) carries high-res keyframes after the clip
            (``skyreels_v4.model.keyframes``, paper 4.5's joint prediction); None = it does not.
    """

    text_tokens: Tensor
    text_mask: Tensor | None
    pooled_text: Tensor | None = None
    conditional_latents: Tensor
    latent_mask: Tensor
    condition_noise: Tensor
    video_given: Tensor
    audio_given: Tensor
    audio_conditional_latents: Tensor | None = None
    audio_latent_mask: Tensor | None = None
    audio_condition_noise: Tensor | None = None
    video_reference: Tensor | None = None
    video_positions: Tensor | None = None
    video_key_mask: Tensor | None = None
    audio_reference: Tensor | None = None
    guidance: Tensor | None = None
    keyframes: KeyframeLayout | None = None


class JointDenoiser:
    """``(video, audio, *, video_sigma, audio_sigma, condition) -> (u_video, u_audio)`` over a transformer
    (skyreels-flow-matching's ``JointVelocityModel``). See the module docstring for the rules."""

    def __init__(self, transformer: JointAudioVideoTransformer, *, check_finite: bool = True) -> None:
        self.transformer = transformer
        self.check_finite = check_finite

    def network(
        self,
        video_latents: Tensor,
        audio_latents: Tensor,
        *,
        video_sigma: Tensor,
        audio_sigma: Tensor,
        condition: ModelCondition,
    ) -> tuple[Tensor, Tensor]:
        """The transformer's outputs in its own prediction space (what training supervises)."""
        c = condition
        zero = torch.zeros_like(video_sigma)
        video_sigma = torch.where(c.video_given, zero, video_sigma)
        audio_sigma = torch.where(c.audio_given, zero, audio_sigma)
        dtype = next(self.transformer.parameters()).dtype
        layout, patch = c.keyframes, tuple(self.transformer.config.video.patch_size)
        states = (video_latents, c.conditional_latents, c.latent_mask)
        if layout is None:
            video_in = torch.cat([t.to(video_latents.dtype) for t in states], dim=1)
            video = {
                "video_reference_latents": None if c.video_reference is None else c.video_reference.to(dtype),
                "video_positions": c.video_positions,
                "video_key_mask": c.video_key_mask,
            }
        else:  # the packed state (clip + keyframe slots): keyframes as denoised reference-like tokens
            if c.video_reference is not None or c.video_positions is not None:
                raise SkyReelsError(
                    "keyframes: joint keyframes do not combine with video references (in-context images "
                    "or clips) yet; drop one of them"
                )
            parts = [unpack_keyframes(t.to(video_latents.dtype), layout) for t in states]
            video_in = torch.cat([p[0] for p in parts], dim=1)
            video = {
                "video_reference_latents": torch.cat([p[1] for p in parts], dim=1).to(dtype),
                "video_positions": keyframe_token_positions(layout, patch).to(video_latents.device),
                "return_video_reference": True,
            }
        out = self.transformer(
            video_in.to(dtype),
            audio_latents.to(dtype),
            timestep=sigma_to_timestep(video_sigma).to(dtype),
            audio_timestep=sigma_to_timestep(audio_sigma).to(dtype),
            text_tokens=c.text_tokens.to(dtype),
            text_mask=c.text_mask,
            pooled_text=None if c.pooled_text is None else c.pooled_text.to(dtype),
            guidance=c.guidance,
            audio_reference_latents=None if c.audio_reference is None else c.audio_reference.to(dtype),
            **video,
        )
        out_video, out_audio = out.video.to(video_latents.dtype), out.audio.to(audio_latents.dtype)
        if layout is not None:
            grid = VideoGrid(layout.count, layout.height // patch[1], layout.width // patch[2])
            keyframes = unpatchify_video(out.video_reference, grid, patch)
            out_video = pack_keyframes(out_video, keyframes, layout)
        return out_video, out_audio

    def raw(
        self,
        video_latents: Tensor,
        audio_latents: Tensor,
        *,
        video_sigma: Tensor,
        audio_sigma: Tensor,
        condition: ModelCondition,
    ) -> tuple[Tensor, Tensor]:
        """The transformer's velocities ``u = ε - x0`` (its output converted from its prediction type),
        without the condition overrides."""
        out_video, out_audio = self.network(
            video_latents,
            audio_latents,
            video_sigma=video_sigma,
            audio_sigma=audio_sigma,
            condition=condition,
        )
        prediction = getattr(self.transformer, "prediction", PredictionType.VELOCITY)
        return (
            prediction_to_velocity(prediction, out_video, video_latents, video_sigma),
            prediction_to_velocity(prediction, out_audio, audio_latents, audio_sigma),
        )

    def __call__(
        self,
        video_latents: Tensor,
        audio_latents: Tensor,
        *,
        video_sigma: Tensor,
        audio_sigma: Tensor,
        condition: ModelCondition,
    ) -> tuple[Tensor, Tensor]:
        c = condition
        u_video, u_audio = self.raw(
            video_latents, audio_latents, video_sigma=video_sigma, audio_sigma=audio_sigma, condition=c
        )
        if self.check_finite and not (
            bool(torch.isfinite(u_video).all()) and bool(torch.isfinite(u_audio).all())
        ):
            raise NonFiniteError(
                "the transformer returned NaN/inf velocities (non-finite weights or inputs); "
                "check the model folder and the conditioning inputs"
            )
        keep = c.latent_mask.to(torch.bool)
        u_video = torch.where(keep, (c.condition_noise - c.conditional_latents).to(u_video.dtype), u_video)
        if c.audio_latent_mask is not None:
            kept = c.audio_latent_mask.to(torch.bool)
            path = (c.audio_condition_noise - c.audio_conditional_latents).to(u_audio.dtype)
            u_audio = torch.where(kept, path, u_audio)
        u_audio = torch.where(c.audio_given[:, None, None], torch.zeros_like(u_audio), u_audio)
        return u_video, u_audio
