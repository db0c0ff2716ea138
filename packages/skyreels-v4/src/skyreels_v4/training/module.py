"""``JointTrainingModule``: flow-matching training of the joint audio-video transformer (paper 3.1, 4).

One training step (batch from the latent cache, all draws from a generator seeded by ``(seed, step)``
and the data-parallel replica, so a resumed run makes exactly the draws the uninterrupted one would):

1. a task from the mixture (``training.tasks``): what is generated and what is given;
2. σ and ε from skyreels-flow-matching (shared or independent σ per modality, any sampler and shift);
3. the task's condition: eq. 7's ``I`` and ``M`` on the latent grid (``I`` is the cached latent where
   ``M = 1`` and the black-frame latent elsewhere), a clean given modality (v2a / a2v: σ = 0), an
   in-context reference (eq. 8), text dropout to the empty prompt (for classifier-free guidance);
4. the network's output in its prediction space (velocity, x0, noise or x0_skip) against the matching target,
   masked per modality (conditioned cells and absent modalities excluded), weighted (eq. 6); with
   ``audio_onset_weight`` the audio tokens where the clean audio changes weigh more (``onset_weights``).

EMA weights are updated in ``optimizer_step`` (so a checkpoint holds the EMA of the saved step) by an
elementwise lerp that is correct on sharded (DTensor) parameters as well.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor

from skyreels_av_rope import AudioTimeAlignment, audio_rotary_config
from skyreels_flow_matching import (
    JointFlowMatching,
    JointFlowMatchingConfig,
    TimestepSharing,
    masked_mse,
)
from skyreels_inpaint_conditioning import (
    TaskMixture,
    TaskSampler,
    TrainingTask,
    pack_video_references,
    reduce_pixel_mask_to_latent,
)
from skyreels_mmdit_blocks import AVExchangeOrder, JointAudioVideoTransformerConfig
from skyreels_v4.errors import NonFiniteError, SkyReelsError
from skyreels_v4.model import (
    JointDenoiser,
    KeyframeLayout,
    ModelCondition,
    PredictionType,
    SkyReelsV4Transformer,
    pack_keyframes,
    prediction_target,
    transformer_preset,
)
from skyreels_v4.refiner.hparams import as_sampler_config
from skyreels_v4.runs import adamw, step_generator
from skyreels_v4.training.tasks import JointTask, parse_task_mixture, sample_task

__all__ = ["JointTrainingModule", "build_transformer_config", "learning_rate_factor", "onset_weights"]

_BRANCH_FIELDS = (
    "dim",
    "num_heads",
    "num_dual_blocks",
    "num_single_blocks",
    "mlp_ratio",
    "num_refiner_blocks",
    "pooled_text_dim",
)


def learning_rate_factor(step: int, *, warmup_steps: int, decay_steps: int, floor: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then a cosine from 1 down to ``floor`` over ``decay_steps`` (held at ``floor``
    after), or 1 when ``decay_steps`` is 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay_steps <= 0:
        return 1.0
    progress = min(1.0, (step - max(warmup_steps, 0)) / decay_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def onset_weights(latents: Tensor, strength: float) -> Tensor:
    """Per-token loss weights ``[B, 1, L]`` that favour the moments where a clip's sound changes.

    ``latents`` are clean audio latents ``[B, C, L]``. The change at token ``t`` is
    ``d_t = ||z_t - z_{t-1}||`` over channels (``d_0 = 0``): large where a sound starts or stops, zero
    through silence or a steady tone, whatever the codec. It is widened to the neighbouring tokens
    (``max(d_{t-1}, d_t, d_{t+1})``) so that a sound placed one token early costs as much as one placed
    one token late, and divided by its mean over the clip. The weight is ``1 + strength · that``: the
    mean weight is about ``1 + strength``, and a clip that never changes weighs 1 everywhere.
    """
    if latents.ndim != 3:
        raise SkyReelsError(f"onset_weights: expected audio latents [B, C, L], got {list(latents.shape)}")
    z = latents.float()
    change = torch.zeros(z.shape[0], 1, z.shape[-1], device=z.device)
    if z.shape[-1] > 1:
        change[..., 1:] = (z[..., 1:] - z[..., :-1]).norm(dim=1, keepdim=True)
    widened = torch.nn.functional.max_pool1d(change, kernel_size=3, stride=1, padding=1)
    mean = widened.mean(dim=-1, keepdim=True)
    normalised = torch.where(mean > 0, widened / mean.clamp_min(1e-12), torch.zeros_like(widened))
    return 1.0 + float(strength) * normalised


def build_transformer_config(
    *,
    preset: str,
    video_latent_channels: int,
    audio_latent_channels: int,
    text_dim: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    av_cross_attention: bool = True,
    audio_alignment: str = "ratio",
    exchange_order: str = "sequential",
    exchange_window: float | None = None,
) -> JointAudioVideoTransformerConfig:
    """A preset sized for the cache's latents, with branch overrides and the ablation switches.

    ``overrides`` may change ``dim``, ``num_heads``, block counts, ``mlp_ratio``, ``num_refiner_blocks``,
    ``pooled_text_dim`` (both branches; ``None`` for a cache without pooled text), ``video_rope_axes``
    (the video RoPE split; it must sum to the head dim), ``video_patch_size`` (``[t, h, w]``) and
    ``video_frame_position`` (K sine / cosine frequencies of each video token's place in its frame,
    ``MMDiTBranchConfig.frame_position_frequencies``; 0 = none, the paper) and ``audio_time_phase``
    (K frequencies of each audio token's phase between video latent frames,
    ``MMDiTBranchConfig.time_phase_frequencies``; 0 = none, the paper).
    """
    from skyreels_av_rope import RotaryConfig

    config = transformer_preset(
        preset, video_latent_channels=video_latent_channels, audio_latent_channels=audio_latent_channels
    )
    overrides = dict(overrides or {})
    rope_axes = overrides.pop("video_rope_axes", None)
    video_patch = overrides.pop("video_patch_size", None)
    frame_position = overrides.pop("video_frame_position", None)
    time_phase = overrides.pop("audio_time_phase", None)
    unknown = sorted(set(overrides) - set(_BRANCH_FIELDS))
    if unknown:
        one_branch = ["video_rope_axes", "video_patch_size", "video_frame_position", "audio_time_phase"]
        raise SkyReelsError(
            f"model_overrides: unknown keys {unknown}; expected some of {[*_BRANCH_FIELDS, *one_branch]}"
        )
    try:
        alignment = AudioTimeAlignment(audio_alignment)
        order = AVExchangeOrder(exchange_order)
    except ValueError as error:
        raise SkyReelsError(f"audio_alignment / exchange_order: {error}") from None
    if alignment is AudioTimeAlignment.SECONDS:
        raise SkyReelsError(
            "audio_alignment: 'seconds' needs explicit positions; use 'ratio' or 'temporal_channels_only'"
        )
    video = config.video
    changes = dict(overrides)
    if text_dim is not None:
        changes["text_dim"] = text_dim
    if rope_axes is not None:
        changes["rope"] = RotaryConfig(axes_dims=tuple(rope_axes), theta=video.rope.theta)
    dual = changes.get("num_dual_blocks", video.num_dual_blocks)
    single = changes.get("num_single_blocks", video.num_single_blocks)
    changes["text_cross_attention_blocks"] = tuple(range(dual, dual + single))
    try:
        video_changes = dict(changes)
        if video_patch is not None:
            video_changes["patch_size"] = tuple(int(p) for p in video_patch)
        if frame_position is not None:
            video_changes["frame_position_frequencies"] = frame_position
        video = dataclasses.replace(video, **video_changes)
        audio_changes = {k: v for k, v in changes.items() if k not in ("text_cross_attention_blocks", "rope")}
        if time_phase is not None:
            audio_changes["time_phase_frequencies"] = time_phase
        audio = dataclasses.replace(
            config.audio,
            **audio_changes,
            rope=audio_rotary_config(alignment, video.rope),
            text_cross_attention_blocks=(),
        )
        return dataclasses.replace(
            config,
            video=video,
            audio=audio,
            audio_alignment=alignment,
            exchange_order=order,
            exchange_window=None if exchange_window is None else float(exchange_window),
            depth_mapping=None if av_cross_attention else (),
        )
    except (TypeError, ValueError) as error:
        raise SkyReelsError(f"model config: {error}") from error


#: Tasks without joint keyframes: no video generated (v2a, t2a), or video references in the sequence.
_NO_KEYFRAMES = (JointTask.V2A, JointTask.T2A, TrainingTask.IMAGE_REFERENCE, TrainingTask.VIDEO_REFERENCE)


class JointTrainingModule(L.LightningModule):
    """Flow-matching training of ``SkyReelsV4Transformer`` on latent-cache batches (module docstring).

    Args:
        preset: tiny / small / full, sized by ``video_latent_channels`` / ``audio_latent_channels`` /
            ``text_dim`` (the cache's; the data module checks them) and ``model_overrides``.
        prediction: velocity, x0, noise or x0_skip (exact conversions, ``skyreels_v4.model.PredictionType``;
            x0 and x0_skip learn fastest on tiny CPU models).
        tasks: the task mixture (``training.tasks``).
        timestep_sampler: skyreels-flow-matching ``TimestepSamplerConfig`` as a dict (None = uniform).
        timestep_sharing: ``shared`` (eq. 6) or ``independent`` σ per modality.
        video_weight, audio_weight: eq. 6's loss weights.
        audio_onset_weight: 0 = every generated audio token weighs the same (the paper); ``a > 0``
            multiplies each token's weight by ``onset_weights`` of strength ``a`` (sound onsets and
            offsets weigh more: in a mostly silent spectrogram a sound placed a frame late otherwise
            costs little).
        text_dropout: probability of replacing a sample's text with the empty prompt.
        warmup_steps, lr_decay_steps, min_learning_rate_ratio: the learning-rate schedule
            (``learning_rate_factor``): linear warm-up, then a cosine decay over ``lr_decay_steps`` to
            ``min_learning_rate_ratio`` of the peak (0 = constant after the warm-up).
        ema_decay: 0 = no EMA.
        av_cross_attention, audio_alignment, exchange_order, exchange_window: the ablation switches
            (``exchange_window``: None = eq. 5 over the whole clip, w = time-local within w latent
            frames, ``JointAudioVideoTransformerConfig``).
        init_from: a model folder (``SkyReelsV4Transformer.save_pretrained``) whose weights start this
            stage (Table 1's stage chaining); its config must match.
        keyframe_probability, keyframe_count: paper 4.5's joint prediction task: with this
            probability a step that generates video also denoises ``keyframe_count`` high-res keyframes
            (random latent frames of the clip, from a cache built with ``keyframe_scale``) in the same
            sequence, with their own loss (``skyreels_v4.model.keyframes``). 0 = never.
    """

    def __init__(
        self,
        *,
        preset: str = "tiny",
        video_latent_channels: int,
        audio_latent_channels: int,
        text_dim: int | None = None,
        model_overrides: dict[str, Any] | None = None,
        prediction: str = "x0",
        tasks: dict[str, float] | None = None,
        timestep_sampler: dict[str, Any] | None = None,
        timestep_sharing: str = "shared",
        video_weight: float = 1.0,
        audio_weight: float = 1.0,
        audio_onset_weight: float = 0.0,
        text_dropout: float = 0.1,
        ema_decay: float = 0.0,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_decay_steps: int = 0,
        min_learning_rate_ratio: float = 0.1,
        activation_checkpointing: bool = False,
        av_cross_attention: bool = True,
        audio_alignment: str = "ratio",
        exchange_order: str = "sequential",
        exchange_window: float | None = None,
        init_from: str | None = None,
        seed: int = 0,
        keyframe_probability: float = 0.0,
        keyframe_count: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        config = build_transformer_config(
            preset=preset,
            video_latent_channels=video_latent_channels,
            audio_latent_channels=audio_latent_channels,
            text_dim=text_dim,
            overrides=model_overrides,
            av_cross_attention=av_cross_attention,
            audio_alignment=audio_alignment,
            exchange_order=exchange_order,
            exchange_window=exchange_window,
        )
        try:
            self.prediction = PredictionType(prediction)
            sharing = TimestepSharing(timestep_sharing)
        except ValueError as error:
            raise SkyReelsError(f"prediction / timestep_sharing: {error}") from None
        self.transformer = SkyReelsV4Transformer(config, prediction=self.prediction)
        if init_from is not None:
            source = SkyReelsV4Transformer.from_pretrained(init_from)
            if source.config != config:
                raise SkyReelsError(
                    f"init_from: {init_from} holds a different transformer config than this stage"
                )
            self.transformer.load_state_dict(source.state_dict())
        if activation_checkpointing:
            self.transformer.set_activation_checkpointing(True)
        self.denoiser = JointDenoiser(self.transformer, check_finite=False)
        self.objective = JointFlowMatching(
            JointFlowMatchingConfig(
                sampler=as_sampler_config(timestep_sampler, name="timestep_sampler"),
                timestep_sharing=sharing,
                video_weight=float(video_weight),
                audio_weight=float(audio_weight),
            )
        )
        self.mixture = parse_task_mixture(tasks or {"t2av": 1.0})
        for name, value in (("warmup_steps", warmup_steps), ("lr_decay_steps", lr_decay_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SkyReelsError(f"{name}: expected an int >= 0, got {value!r}")
        if isinstance(keyframe_count, bool) or not isinstance(keyframe_count, int) or keyframe_count < 1:
            raise SkyReelsError(f"keyframe_count: expected a positive int, got {keyframe_count!r}")
        for name, value, low, high in (
            ("keyframe_probability", keyframe_probability, 0.0, 1.0),
            ("text_dropout", text_dropout, 0.0, 1.0),
            ("ema_decay", ema_decay, 0.0, 1.0),
            ("audio_onset_weight", audio_onset_weight, 0.0, 100.0),
            ("learning_rate", learning_rate, 0.0, 10.0),
            ("min_learning_rate_ratio", min_learning_rate_ratio, 0.0, 1.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise SkyReelsError(f"{name}: expected a number in [{low}, {high}], got {value!r}")
        self.ema: list[Tensor] | None = None
        if ema_decay > 0:
            self.ema = [p.detach().clone() for p in self.transformer.parameters()]
        # Set by the data module (the cache's empty-prompt embedding and black latent).
        self.empty_prompt: Tensor | None = None
        self.empty_pooled: Tensor | None = None
        self.black_latents: dict[tuple[int, int], Tensor] = {}
        self.frame_geometry: tuple[int, int] | None = None  # (temporal_factor, spatial_factor)

    # -- wiring -------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Lightning calls this on every rank before the optimizers exist. Under
        ``skyreels_v4.scale.lightning.SkyReelsParallelStrategy`` it applies ``parallelize`` (Ulysses SP
        when ``sp`` > 1, FSDP2 / HSDP, mixed precision, activation checkpointing, regional compile) to
        the transformer and re-creates the EMA shadows on the sharded parameters; under any other
        strategy it does nothing. So every training module (stages, LoRA) runs at scale from YAML."""
        from skyreels_v4.scale.lightning import parallelize_module

        parallelize_module(self)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        cache = getattr(dm, "cache", None)
        if cache is None:
            return
        cfg = self.transformer.config
        for name, ours, theirs in (
            ("video_latent_channels", self.transformer.video_latent_channels, cache.video_latent_channels),
            ("audio_latent_channels", self.transformer.audio_latent_channels, cache.audio_latent_channels),
            ("text_dim", cfg.video.text_dim, cache.text_dim),
            (
                "pooled_text_dim",
                cfg.video.pooled_text_dim,
                None if cache.empty_pooled is None else int(cache.empty_pooled.shape[-1]),
            ),
        ):
            if ours != theirs:
                from skyreels_v4.errors import PreflightError

                raise PreflightError(
                    f"model.{name}: the model expects {ours}, the cache {cache.root} holds {theirs}; "
                    "set it to the cache's value"
                )
        self.empty_prompt = cache.empty_prompt
        self.empty_pooled = cache.empty_pooled
        self.black_latents = dict(cache.black_latents)
        self.frame_geometry = (int(cache.index["temporal_factor"]), int(cache.index["spatial_factor"]))

    def configure_optimizers(self) -> Any:
        return self._optimizer_and_schedule(self.transformer.parameters())

    def _optimizer_and_schedule(self, parameters: Any) -> Any:
        """AdamW over ``parameters`` with the linear warm-up and optional cosine decay
        (``learning_rate_factor``), stepped per optimizer step (its state is in the checkpoint)."""
        hp = self.hparams
        optimizer = adamw(
            parameters,
            trainer=self._trainer,
            lr=hp.learning_rate,
            weight_decay=hp.weight_decay,
            betas=(0.9, 0.99),
        )
        warmup, decay = int(hp.warmup_steps), int(hp.lr_decay_steps)
        if warmup <= 0 and decay <= 0:
            return optimizer
        floor = float(hp.min_learning_rate_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(learning_rate_factor, warmup_steps=warmup, decay_steps=decay, floor=floor)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- one step -----------------------------------------------------------------------------
    def _generator(self, salt: int) -> torch.Generator:
        """The step's generator (``runs.step_generator``): seeded by ``(seed, salt)`` and this
        process's data-parallel replica. Every task's forward reaches every parameter, so replicas
        on different tasks run the same FSDP2 collectives."""
        return step_generator(int(self.hparams.seed), salt, self._trainer)

    def prepare_batch(
        self,
        batch: Mapping[str, Tensor],
        *,
        generator: torch.Generator,
        task: Any | None = None,
        keyframes: bool = True,
    ) -> dict[str, Any]:
        """The step's inputs: noisy states, σ, condition, targets and loss masks (module docstring).
        ``keyframes=False`` never adds the joint keyframes (validation compares plain t2av losses)."""
        z_v, z_a = batch["video_latents"].float(), batch["audio_latents"].float()
        text, text_mask = batch["text_tokens"].float(), batch["text_mask"].bool()
        pooled = batch.get("pooled_text")
        pooled = None if pooled is None else pooled.float()
        device, b = z_v.device, z_v.shape[0]
        _, c, t, h, w = z_v.shape
        task = sample_task(self.mixture, generator) if task is None else task

        # Text dropout -> the empty prompt (what guidance's negative branch sees at inference).
        if self.hparams.text_dropout > 0:
            drop = torch.rand(b, generator=generator) < self.hparams.text_dropout
            if bool(drop.any()):
                if self.empty_prompt is None:
                    raise SkyReelsError(
                        "text_dropout: needs the cache's empty-prompt embedding (use the data module)"
                    )
                empty = self.empty_prompt.to(device)
                length = max(text.shape[1], empty.shape[0])
                text = torch.nn.functional.pad(text, (0, 0, 0, length - text.shape[1]))
                text_mask = torch.nn.functional.pad(text_mask, (0, length - text_mask.shape[1]))
                for i in drop.nonzero().flatten().tolist():
                    text[i] = 0
                    text[i, : empty.shape[0]] = empty
                    text_mask[i] = False
                    text_mask[i, : empty.shape[0]] = True
                if pooled is not None:
                    if self.empty_pooled is None:
                        raise SkyReelsError(
                            "text_dropout: the batch has pooled_text but the cache no empty-prompt pooled "
                            "vector (rebuild the cache with the same text encoder)"
                        )
                    pooled = pooled.clone()
                    pooled[drop.to(device)] = self.empty_pooled.to(device=device, dtype=pooled.dtype)

        # σ, then ε for video, then ε for audio (skyreels-flow-matching's order), all on the CPU
        # generator so that every device of one replica draws the same numbers.
        patch = self.transformer.config.video.patch_size
        s_v, s_a = self.objective.sample_sigmas(
            b,
            generator=generator,
            video_num_tokens=t * h * w // (patch[0] * patch[1] * patch[2]),
            audio_num_tokens=z_a.shape[-1],
        )
        eps_v = torch.randn(z_v.shape, generator=generator).to(device)
        eps_a = torch.randn(z_a.shape, generator=generator).to(device)
        s_v, s_a = s_v.to(device), s_a.to(device)
        x_v = (1 - s_v.view(-1, 1, 1, 1, 1)) * z_v + s_v.view(-1, 1, 1, 1, 1) * eps_v
        x_a = (1 - s_a.view(-1, 1, 1)) * z_a + s_a.view(-1, 1, 1) * eps_a

        latent_mask = torch.zeros(b, 1, t, h, w, device=device)
        video_given = torch.zeros(b, dtype=torch.bool, device=device)
        audio_given = torch.zeros(b, dtype=torch.bool, device=device)
        video_loss = torch.ones(b, 1, 1, 1, 1, device=device)
        audio_loss = torch.ones(b, 1, 1, device=device)
        references: dict[str, Tensor] = {}
        if task is JointTask.V2A:
            video_given[:] = True
            latent_mask[:] = 1
            x_v = z_v
            video_loss = video_loss * 0
        elif task is JointTask.A2V:
            audio_given[:] = True
            x_a = z_a
            audio_loss = audio_loss * 0
        elif task is JointTask.T2V:  # audio absent: pure noise at σ = 1, no loss
            x_a, s_a = (
                eps_a if bool((s_a > 0).all()) else torch.randn(z_a.shape, generator=generator).to(device),
                torch.ones_like(s_a),
            )
            audio_loss = audio_loss * 0
        elif task is JointTask.T2A:
            x_v, s_v = eps_v, torch.ones_like(s_v)
            video_loss = video_loss * 0
        elif isinstance(task, TrainingTask):
            latent_mask, references = self._video_task(task, z_v, generator)
        black = self.black_latents.get((h, w))
        if black is None:
            if bool(latent_mask.any()) and self.black_latents:
                raise SkyReelsError(f"batch: no black-frame latent for a {h}x{w} latent grid in the cache")
            black = torch.zeros(c, h, w)
        black = black.to(device).view(1, c, 1, h, w)
        conditional = torch.where(latent_mask.bool(), z_v, black.expand_as(z_v))
        targets = (
            prediction_target(self.prediction, z_v, eps_v, x_v, s_v),
            prediction_target(self.prediction, z_a, eps_a, x_a, s_a),
        )
        video_loss_mask = (video_loss * (1 - latent_mask)).expand(b, 1, t, h, w)
        if self.hparams.get("audio_onset_weight", 0.0) > 0:
            audio_loss = audio_loss * onset_weights(z_a, self.hparams.audio_onset_weight)
        condition_noise, layout = eps_v, None
        joint_keyframes = (
            keyframes
            and self.hparams.keyframe_probability > 0
            and task
            not in (JointTask.V2A, JointTask.T2A, TrainingTask.IMAGE_REFERENCE, TrainingTask.VIDEO_REFERENCE)
        )
        if joint_keyframes and bool(torch.rand(1, generator=generator) < self.hparams.keyframe_probability):
            x_v, conditional, latent_mask, condition_noise, targets, video_loss_mask, layout = (
                self._keyframes(
                    batch, generator, s_v, x_v, conditional, latent_mask, eps_v, targets, video_loss_mask
                )
            )
        condition = ModelCondition(
            text_tokens=text,
            text_mask=text_mask,
            pooled_text=pooled,
            conditional_latents=conditional,
            latent_mask=latent_mask,
            condition_noise=condition_noise,
            video_given=video_given,
            audio_given=audio_given,
            keyframes=layout,
            **references,
        )
        return {
            "task": task,
            "video": x_v,
            "audio": x_a,
            "video_sigma": s_v,
            "audio_sigma": s_a,
            "condition": condition,
            "video_target": targets[0],
            "audio_target": targets[1],
            "video_loss_mask": video_loss_mask,
            "audio_loss_mask": audio_loss,
        }

    def _keyframes(
        self,
        batch: Mapping[str, Tensor],
        generator: torch.Generator,
        s_v: Tensor,
        x_v: Tensor,
        conditional: Tensor,
        latent_mask: Tensor,
        eps_v: Tensor,
        targets: tuple[Tensor, Tensor],
        video_loss_mask: Tensor,
    ) -> tuple:
        """Paper 4.5's joint prediction: ``keyframe_count`` random latent frames of the clip at the high
        resolution, noisy at the clip's σ, packed after the clip (``skyreels_v4.model.keyframes``);
        generated (M = 0, I = the high-res black latent) and supervised like the clip."""
        full = batch.get("keyframe_latents")
        if full is None:
            raise SkyReelsError(
                "keyframe_probability: the batch has no keyframe_latents; build the cache with "
                "keyframe_scale (skyreels-v4 cache --keyframe-scale S)"
            )
        full = full.float().to(x_v.device)
        b, c, t, h, w = x_v.shape
        count = min(int(self.hparams.keyframe_count), t)
        indices = tuple(sorted(torch.randperm(t, generator=generator)[:count].tolist()))
        z_k = full[:, :, list(indices)]
        eps_k = torch.randn(z_k.shape, generator=generator).to(x_v.device)
        x_k = (1 - s_v.view(-1, 1, 1, 1, 1)) * z_k + s_v.view(-1, 1, 1, 1, 1) * eps_k
        height, width = z_k.shape[-2:]
        layout = KeyframeLayout(
            frame_indices=indices,
            height=int(height),
            width=int(width),
            base_frames=t,
            base_height=h,
            base_width=w,
        )
        black = self.black_latents.get((int(height), int(width)))
        black = torch.zeros(c, height, width) if black is None else black
        black = black.to(x_v.device).view(1, c, 1, height, width).expand_as(z_k)
        zeros = torch.zeros(b, 1, count, height, width, device=x_v.device)
        target_k = prediction_target(self.prediction, z_k, eps_k, x_k, s_v)
        return (
            pack_keyframes(x_v, x_k, layout),
            pack_keyframes(conditional, black, layout),
            pack_keyframes(latent_mask, zeros, layout, fill=1.0),  # padding: kept at I = 0, noise 0
            pack_keyframes(eps_v, eps_k, layout),
            (pack_keyframes(targets[0], target_k, layout), targets[1]),
            pack_keyframes(video_loss_mask, zeros + 1, layout),  # padding: no loss
            layout,
        )

    def _video_task(self, task: TrainingTask, z_v: Tensor, generator: torch.Generator) -> tuple[Tensor, dict]:
        """Eq. 7's latent mask for an inpainting task, or an in-context reference (eq. 8)."""
        b, _, t, h, w = z_v.shape
        tf, sf = self.frame_geometry or (4, 8)
        frames, height, width = 1 + (t - 1) * tf, h * sf, w * sf
        device = z_v.device
        if task in (TrainingTask.IMAGE_REFERENCE, TrainingTask.VIDEO_REFERENCE):
            # The clip's own frames as the reference: one latent frame (image) or a short run (clip).
            span = 1 if task is TrainingTask.IMAGE_REFERENCE or t < 2 else min(t, 2)
            start = int(torch.randint(0, t - span + 1, (1,), generator=generator))
            reference = z_v[:, :, start : start + span]
            patch = self.transformer.config.video.patch_size
            packed = pack_video_references([reference], video_grid=(t, h, w), patch_size=patch)
            return torch.zeros(b, 1, t, h, w, device=device), {
                "video_reference": packed.concat_input(),
                "video_positions": packed.positions[None].expand(b, -1, -1).to(device),
                "video_key_mask": packed.key_valid.to(device),
            }
        sampler = TaskSampler(
            TaskMixture(name="step", weights={task: 1.0}),
            seed=int(torch.randint(0, 2**31, (1,), generator=generator)),
        )
        masks = []
        for _ in range(b):
            spec = sampler.draw_spec(task, num_frames=frames, height=height, width=width, temporal_factor=tf)
            pixel = spec.pixel_keep_mask(num_frames=frames, height=height, width=width, temporal_factor=tf)
            masks.append(pixel)
        pixel_mask = torch.stack(masks)[:, None]
        latent = reduce_pixel_mask_to_latent(pixel_mask, temporal_factor=tf, spatial_factor=sf)
        return latent.to(device=device, dtype=torch.float32), {}

    def compute_loss(self, prepared: Mapping[str, Any]) -> dict[str, Tensor]:
        out_v, out_a = self.denoiser.network(
            prepared["video"],
            prepared["audio"],
            video_sigma=prepared["video_sigma"],
            audio_sigma=prepared["audio_sigma"],
            condition=prepared["condition"],
        )
        config = self.objective.config
        video = masked_mse(
            out_v, prepared["video_target"], prepared["video_loss_mask"].expand_as(out_v[:, :1])
        )
        audio = masked_mse(
            out_a, prepared["audio_target"], prepared["audio_loss_mask"].expand_as(out_a[:, :1])
        )
        total = config.video_weight * video + config.audio_weight * audio
        return {"loss": total, "video_loss": video, "audio_loss": audio}

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        generator = self._generator(int(self.global_step))
        prepared = self.prepare_batch(batch, generator=generator)
        losses = self.compute_loss(prepared)
        if not bool(torch.isfinite(losses["loss"])):
            raise NonFiniteError(
                f"training loss is {float(losses['loss'])} at global step {self.global_step} "
                f"(batch {batch_idx}, task {prepared['task'].value}, "
                f"cache items {batch.get('index', torch.tensor([])).tolist()})"
            )
        b = batch["video_latents"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=b)
        self.log("train/video_loss", losses["video_loss"], batch_size=b)
        self.log("train/audio_loss", losses["audio_loss"], batch_size=b)
        return losses["loss"]

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        # Fixed draws per batch: comparable across validations (t2av, σ from the run's sampler).
        prepared = self.prepare_batch(
            batch, generator=self._generator(10_000_000 + batch_idx), task=JointTask.T2AV, keyframes=False
        )
        losses = self.compute_loss(prepared)
        b = batch["video_latents"].shape[0]
        for key, value in losses.items():
            self.log(f"val/{key}", value, batch_size=b)

    # -- EMA ----------------------------------------------------------------------------------
    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        result = super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            decay = float(self.hparams.ema_decay)
            with torch.no_grad():
                for shadow, param in zip(self.ema, self.transformer.parameters()):
                    shadow.lerp_(param.detach().to(shadow.device), 1.0 - decay)
        return result

    def _gather_sharded(self, use_ema: bool) -> SkyReelsV4Transformer | None:
        from skyreels_v4.scale.checkpoint import gather_full_state

        state = gather_full_state(self.transformer, self.ema if use_ema else None)
        if state is None:
            return None
        model = self._plain_transformer()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise SkyReelsError(
                f"export: the sharded transformer's weights do not fit a plain {type(model).__name__} "
                f"of its config ({first})"
            ) from error
        return model.eval()

    def _plain_transformer(self) -> SkyReelsV4Transformer:
        """A new, unsharded transformer laid out like ``self.transformer`` (what a sharded export fills)."""
        sharded = self.transformer
        return SkyReelsV4Transformer(
            sharded.config, prediction=sharded.prediction, video_attention=sharded.video_attention
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from skyreels_v4.scale import is_sharded

        if self.ema is None:
            return
        if not is_sharded(self.ema):
            checkpoint["ema"] = [s.detach().cpu() for s in self.ema]
            return
        strategy = self._trainer.strategy if self._trainer is not None else None
        if getattr(strategy, "_save_distributed_checkpoint", False):
            return  # SkyReelsParallelStrategy writes every rank's EMA shards itself (decisions/0016)
        # One full file, written by rank 0: gather each shadow (every rank runs this hook), keep it
        # on rank 0 only.
        full = [s.full_tensor().detach() for s in self.ema]
        if self.global_rank == 0:
            checkpoint["ema"] = [s.cpu() for s in full]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        if self.ema is not None and "ema" in checkpoint:
            saved = checkpoint["ema"]
            if len(saved) != len(self.ema):
                raise SkyReelsError(
                    f"checkpoint: EMA holds {len(saved)} tensors, the model has {len(self.ema)}"
                )
            self.ema = [
                distribute_tensor(s.to(p.device_mesh.device_type), p.device_mesh, p.placements)
                if isinstance(p, DTensor)  # a full file into a sharded model: this rank's shards
                else s.to(p.device)
                for s, p in zip(saved, self.transformer.parameters())
            ]

    def export_transformer(self, *, use_ema: bool = True) -> SkyReelsV4Transformer | None:
        """A plain copy of the transformer for inference (EMA weights when there are any).

        Sharded weights (``SkyReelsParallelStrategy``): collective, every rank must call it; the whole
        weights are gathered tensor by tensor onto rank 0's CPU, which returns the plain model (built
        from the transformer's config); the other ranks return None."""
        from skyreels_v4.scale import is_sharded

        if is_sharded(self.transformer.parameters()):
            model = self._gather_sharded(use_ema)
            if model is None:
                return None
        else:
            model = copy.deepcopy(self.transformer).cpu().eval()
            if use_ema and self.ema is not None:
                with torch.no_grad():
                    for param, shadow in zip(model.parameters(), self.ema):
                        param.copy_(shadow)
        for param in model.parameters():
            if not bool(torch.isfinite(param).all()):
                raise NonFiniteError("export: the transformer holds NaN/inf weights; refusing to export")
        return model
