"""``SkyReelsV4Pipeline``: a prompt (and media) in, a video with sound out (paper 3.1-3.3).

One pipeline serves every task (``GenerationRequest``): it encodes the prompt once with the shared text
encoder (positive and negative, cached), builds the video branch's ``Concat(V, I, M)`` condition with
skyreels-inpaint-conditioning, packs in-context references (eq. 8-9), draws the noise from a CPU
generator (bit-reproducible on CPU), samples both modalities jointly with per-modality guidance and any
solver of skyreels-flow-matching, pastes the conditioned latents back exactly, and decodes.

The folder layout follows diffusers: ``model_index.json`` names one subfolder per component
(``transformer``, ``video_vae``, ``audio_vae``, ``text_encoder``, ``scheduler``, optionally ``refiner``).
A component recorded as ``[null, null]`` (e.g. by ``skyreels-v4 convert`` without ``--audio-vae``) loads
as None; a task that needs it then raises an error naming it (``require``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from skyreels_flow_matching import GuidanceBatching, JointGuidedDenoiser, flow_sigmas, sample
from skyreels_inpaint_conditioning import (
    ImageToVideo,
    StartEndInterpolation,
    TaskSpec,
    TextToVideo,
    VideoEditing,
    VideoExtension,
    build_inpaint_condition,
    pack_video_references,
    video_from_keyframes,
)
from skyreels_mmdit_blocks import skipping_zero_text_cross_attention
from skyreels_v4.errors import FileFormatError, NonFiniteError, PromptError, SkyReelsError
from skyreels_v4.io import atomic_write_json, read_json
from skyreels_v4.model import ModelCondition, SkyReelsV4Transformer
from skyreels_v4.pipeline.denoise import denoiser_for_task
from skyreels_v4.pipeline.long import DEFAULT_AUDIO_CROSSFADE, LongClip, generate_long
from skyreels_v4.pipeline.memory import (
    BlockOffload,
    OffloadMode,
    offloadable_blocks,
    onloaded,
    quantize_int8_weights,
)
from skyreels_v4.pipeline.output import GenerationOutput
from skyreels_v4.pipeline.prompting import PromptPlan, plan_prompt
from skyreels_v4.pipeline.refine import RefinerComponent, generate_refined
from skyreels_v4.pipeline.request import GenerationRequest, Task
from skyreels_v4.pipeline.sampling import NegativeReferences, SamplingConfig

__all__ = ["GenerationDefaults", "PreparedGeneration", "SkyReelsV4Pipeline"]

MODEL_INDEX = "model_index.json"
# Components that a folder may lack ([null, null] in model_index.json) -> the package of their loaders.
_OPTIONAL_COMPONENTS = {
    "video_vae": "skyreels_v4.vae",
    "audio_vae": "skyreels_v4.vae",
    "text_encoder": "skyreels_v4.text",
    "refiner": "skyreels_v4.pipeline",
}
StepCallback = Callable[[int, float, tuple[Tensor, Tensor]], None]


@dataclass(frozen=True, kw_only=True)
class GenerationDefaults:
    """Output size used when a request leaves it open (stored in ``model_index.json``)."""

    num_frames: int = 33
    height: int = 64
    width: int = 64
    fps: float = 16.0


@dataclass(frozen=True, kw_only=True, eq=False)
class PreparedGeneration:
    """Everything sampling needs, built from a request (exposed for tests, callbacks and tools).

    ``video_noise``/``audio_noise`` are the initial states at σ = 1; ``condition`` / ``negative`` the
    transformer inputs; ``num_frames``... the resolved output size.
    """

    request: GenerationRequest
    prompt: PromptPlan
    num_frames: int
    height: int
    width: int
    fps: float
    num_audio_samples: int
    video_noise: Tensor
    audio_noise: Tensor
    condition: ModelCondition
    negative: ModelCondition


class SkyReelsV4Pipeline:
    """The composed model: transformer, video and audio autoencoders, text encoder, sampling config."""

    def __init__(
        self,
        *,
        transformer: SkyReelsV4Transformer,
        video_vae: Any | None,
        audio_vae: Any | None,
        text_encoder: Any | None,
        sampling: SamplingConfig | None = None,
        defaults: GenerationDefaults | None = None,
        refiner: RefinerComponent | None = None,
    ) -> None:
        """``refiner`` (optional) serves ``GenerationRequest.refine_to`` (paper 4.5)."""
        self.transformer = transformer
        self.refiner = refiner
        self.video_vae = video_vae
        self.audio_vae = audio_vae
        self.text_encoder = text_encoder
        self.sampling = sampling or SamplingConfig()
        self.defaults = defaults or GenerationDefaults()
        self._prompt_cache: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._offload = OffloadMode.NONE
        self._execution_device: torch.device | None = None
        self._block_offload: BlockOffload | None = None
        self._check_components()

    # -- components ---------------------------------------------------------------------------
    def _check_components(self) -> None:
        cfg = self.transformer.config
        c = self.transformer.video_latent_channels
        if self.video_vae is not None and self.video_vae.latent_channels != c:
            raise SkyReelsError(
                f"video_vae: latent_channels {self.video_vae.latent_channels} does not match the "
                f"transformer's video latents ({c}; it reads 2C + 1 = {cfg.video.in_channels} channels)"
            )
        if (
            self.audio_vae is not None
            and self.audio_vae.latent_channels != self.transformer.audio_latent_channels
        ):
            raise SkyReelsError(
                f"audio_vae: latent_channels {self.audio_vae.latent_channels} does not match the "
                f"transformer's audio latents ({self.transformer.audio_latent_channels})"
            )
        if self.refiner is not None:
            if not isinstance(self.refiner, RefinerComponent):
                raise TypeError(f"refiner: expected a RefinerComponent, got {type(self.refiner).__name__}")
            branch = self.refiner.refiner.config.branch
            if branch.out_channels != c or branch.text_dim != cfg.video.text_dim:
                raise SkyReelsError(
                    f"refiner: reads C = {branch.out_channels} latent channels and {branch.text_dim}-wide "
                    f"text, the transformer C = {c} and {cfg.video.text_dim}"
                )
        if (
            self.text_encoder is not None
            and getattr(self.text_encoder, "dim", cfg.video.text_dim) != cfg.video.text_dim
        ):
            raise SkyReelsError(
                f"text_encoder: width {self.text_encoder.dim} does not match the transformer's text_dim "
                f"{cfg.video.text_dim}"
            )

    def require(self, name: str, purpose: str) -> Any:
        """The component ``name``, or a ``SkyReelsError`` naming it when the folder has none."""
        component = getattr(self, name)
        if component is None:
            raise SkyReelsError(
                f"{name}: this pipeline has no {name} (model_index.json lists it as [null, null]), but "
                f"{purpose} needs one; add a {name}/ folder (skyreels-v4 convert --{name.replace('_', '-')}) "
                f"or set pipe.{name}"
            )
        return component

    @property
    def device(self) -> torch.device:
        """Where the computation runs (the offload target when an offload mode is on)."""
        if self._execution_device is not None:
            return self._execution_device
        return next(self.transformer.parameters()).device

    @property
    def offload_mode(self) -> OffloadMode:
        return self._offload

    def enable_offload(
        self, mode: OffloadMode | str, *, device: str | torch.device, max_resident_blocks: int = 2
    ) -> None:
        """Low-memory modes (``skyreels_v4.pipeline.memory``): ``model`` keeps every component on the CPU
        except while it runs on ``device``; ``block`` keeps the transformer's blocks on the CPU and moves
        at most ``max_resident_blocks`` at a time, the other components staying on ``device``;
        ``none`` puts everything on ``device``."""
        try:
            mode = OffloadMode(mode)
        except ValueError:
            raise SkyReelsError(
                f"mode: expected one of {[m.value for m in OffloadMode]}, got {mode!r}"
            ) from None
        try:
            target = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise SkyReelsError(
                f"device: expected a torch device such as 'cuda' or 'cpu', got {device!r}"
            ) from error
        if self._block_offload is not None:
            self._block_offload.remove()
            self._block_offload = None
        components = [
            m for m in (self.text_encoder, self.video_vae, self.audio_vae, self.refiner) if m is not None
        ]
        if mode is OffloadMode.MODEL:
            for module in (*components, self.transformer):
                module.to("cpu")
        else:
            for module in components:
                module.to(target)
            self.transformer.to(target)
        if mode is OffloadMode.BLOCK:
            blocks = offloadable_blocks(self.transformer)
            self._block_offload = BlockOffload(blocks, device=target, max_resident=max_resident_blocks)
        self._offload, self._execution_device = mode, (None if mode is OffloadMode.NONE else target)

    @property
    def block_offload(self) -> BlockOffload | None:
        """The hooks of ``OffloadMode.BLOCK`` (their counters), else None."""
        return self._block_offload

    def quantize_int8(self) -> None:
        """torchao int8 weight-only linear layers in the transformer (in place, a quarter of fp32 weights)."""
        if self._offload is OffloadMode.BLOCK:
            raise SkyReelsError("quantize: apply int8 quantisation before enabling block offload, not after")
        quantize_int8_weights(self.transformer)

    def _onloaded(self, module: Any):
        return onloaded(module, self.device, offload=self._offload is OffloadMode.MODEL)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def save_pretrained(self, folder: str | os.PathLike[str], *, max_shard_size: int | str = "5GB") -> Path:
        """Write every component into its subfolder and ``model_index.json`` last (its presence marks a
        complete folder)."""
        root = Path(folder)
        self.transformer.save_pretrained(root / "transformer", max_shard_size=max_shard_size)
        index: dict[str, Any] = {
            "_class_name": "SkyReelsV4Pipeline",
            "_format_version": 1,
            "transformer": ["skyreels_v4.model", type(self.transformer).__name__],
        }
        for name, package in _OPTIONAL_COMPONENTS.items():
            component = getattr(self, name)
            if component is None:
                index[name] = [None, None]  # absent: loads as None
                continue
            component.save_pretrained(root / name)
            index[name] = [package, type(component).__name__]
        self.sampling.save_pretrained(root / "scheduler")
        index.update(
            {
                "scheduler": ["skyreels_v4.pipeline", "SamplingConfig"],
                "defaults": {
                    "num_frames": self.defaults.num_frames,
                    "height": self.defaults.height,
                    "width": self.defaults.width,
                    "fps": self.defaults.fps,
                },
            }
        )
        atomic_write_json(root / MODEL_INDEX, index)
        return root

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> SkyReelsV4Pipeline:
        """Load every component; the transformer is built on the meta device and loaded shard by shard."""
        from skyreels_v4.text import load_text_encoder
        from skyreels_v4.vae import load_audio_codec, load_video_codec

        root = Path(folder)
        if not root.is_dir():
            raise FileFormatError(root, "expected a SkyReels-V4 model folder, but it does not exist")
        index = read_json(root / MODEL_INDEX, what="model_index.json")
        if not isinstance(index, dict) or index.get("_class_name") != "SkyReelsV4Pipeline":
            raise FileFormatError(root / MODEL_INDEX, "expected a SkyReelsV4Pipeline model_index.json")
        present = {"transformer", "scheduler"}
        for name in _OPTIONAL_COMPONENTS:
            entry = index.get(name, [None, None] if name == "refiner" else "missing")
            if entry == [None, None]:
                continue
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
                raise FileFormatError(
                    root / MODEL_INDEX, f"{name}: expected [package, class] or [null, null], got {entry!r}"
                )
            present.add(name)
        for name in sorted(present):
            if not (root / name).is_dir():
                raise FileFormatError(root / name, f"the component folder {name!r} is missing")
        try:
            defaults = GenerationDefaults(**index.get("defaults", {}))
        except TypeError as error:
            raise FileFormatError(root / MODEL_INDEX, f"bad 'defaults': {error}") from error
        transformer = SkyReelsV4Transformer.from_pretrained(root / "transformer", dtype=dtype, device=device)
        loaders = {
            "video_vae": lambda path: load_video_codec(path, device=device),
            "audio_vae": lambda path: load_audio_codec(path, device=device),
            "text_encoder": lambda path: load_text_encoder(path, device=device),
            "refiner": lambda path: RefinerComponent.from_pretrained(path, dtype=dtype, device=device),
        }
        loaded = {name: loaders[name](root / name) if name in present else None for name in loaders}
        sampling = SamplingConfig.from_pretrained(root / "scheduler")
        return cls(transformer=transformer, sampling=sampling, defaults=defaults, **loaded)

    # -- prompts ------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> tuple[Any, Any]:
        """Positive and negative ``TextEmbeddings`` padded to one length (cached per prompt pair)."""
        key = (prompt, negative_prompt)
        cached = self._prompt_cache.get(key)
        if cached is None:
            encoder = self.require("text_encoder", "encoding the prompt")
            with self._onloaded(encoder):
                embeddings = encoder.encode([prompt, negative_prompt])
            embeddings.check_finite("text_encoder output")
            cached = (embeddings.index(0).trim(), embeddings.index(1).trim())
            length = max(cached[0].length, cached[1].length)
            cached = (cached[0].pad_to(length), cached[1].pad_to(length))
            if len(self._prompt_cache) > 64:
                self._prompt_cache.clear()
            self._prompt_cache[key] = cached
        return cached

    # -- sizes --------------------------------------------------------------------------------
    def _resolve_size(
        self, request: GenerationRequest, duration_s: float | None = None
    ) -> tuple[int, int, int, float]:
        d = self.defaults
        fps = float(request.fps if request.fps is not None else d.fps)
        frames, height, width = request.num_frames, request.height, request.width
        tf = self.require("video_vae", f"task {request.task.value!r} (its latent grid)").temporal_factor
        if self.audio_vae is None:
            audio_needs = "" if not request.task.outputs_audio else f"task {request.task.value!r}"
            if request.audio is not None or request.reference_audios:
                audio_needs = "encoding the request's audio"
            if audio_needs:
                self.require("audio_vae", audio_needs)
        if duration_s is not None:
            frames = self._multishot_frames(request, frames, duration_s, fps)
        source = request.video
        if request.task in (Task.V2A, Task.EDIT) and source is not None:
            for name, value, own in (
                ("num_frames", frames, source.shape[1]),
                ("height", height, source.shape[2]),
                ("width", width, source.shape[3]),
            ):
                if value is not None and value != own:
                    raise SkyReelsError(
                        f"{name}: task {request.task.value!r} keeps the source video's {own}, got {value}"
                    )
            frames, height, width = source.shape[1], source.shape[2], source.shape[3]
        if request.task is Task.EXTEND and source is not None:
            height = source.shape[2] if height is None else height
            width = source.shape[3] if width is None else width
            if (height, width) != tuple(source.shape[2:]):
                raise SkyReelsError(
                    f"height/width: extension keeps the source's size {tuple(source.shape[2:])}, "
                    f"got {(height, width)}"
                )
            if frames is None:
                frames = source.shape[1] + d.num_frames - 1
        for image_name in ("image", "last_image"):
            image = getattr(request, image_name)
            if image is not None:
                height = image.shape[1] if height is None else height
                width = image.shape[2] if width is None else width
                if (height, width) != tuple(image.shape[1:]):
                    raise SkyReelsError(
                        f"{image_name}: expected size {(height, width)}, got {tuple(image.shape[1:])} "
                        "(resize it first)"
                    )
        if request.task is Task.A2V and request.audio is not None and frames is None:
            seconds = request.audio.shape[1] / request.audio_sample_rate
            # The shortest whole-latent clip that covers the track (the audio is padded, never cut).
            frames = 1 + max(0, math.ceil((math.ceil(seconds * fps - 1e-6) - 1) / tf)) * tf
        frames = d.num_frames if frames is None else frames
        height = d.height if height is None else height
        width = d.width if width is None else width
        cell = self.video_vae.spatial_factor * self.transformer.config.video.patch_size[1]
        if (frames - 1) % tf:
            if request.task in (Task.V2A, Task.EDIT, Task.A2V):
                # The clip's own length: cut to the longest causal length that fits, and say so.
                usable = 1 + (frames - 1) // tf * tf
                warnings.warn(
                    f"num_frames: {frames} frames do not fill whole latent frames (1 + {tf}k); "
                    f"the last {frames - usable} frame(s) are not generated/kept",
                    stacklevel=3,
                )
                frames = usable
            else:
                lower = 1 + (frames - 1) // tf * tf
                raise SkyReelsError(
                    f"num_frames: expected 1 + {tf}k frames (the video VAE's causal grouping), got {frames}; "
                    f"nearest: {lower} or {lower + tf}"
                )
        if height % cell or width % cell:
            raise SkyReelsError(
                f"height/width: expected multiples of {cell} (VAE {self.video_vae.spatial_factor} x patch), "
                f"got {height}x{width}"
            )
        return frames, height, width, fps

    def _multishot_frames(
        self, request: GenerationRequest, frames: int | None, duration_s: float, fps: float
    ) -> int | None:
        """A multi-shot prompt's length: the shots' total when ``num_frames`` is open (rounded to the
        nearest whole-latent length, with a warning when that changes it), else checked against it
        (they must agree within one latent frame, ``temporal_factor / fps`` seconds)."""
        tf = self.video_vae.temporal_factor
        if request.task in (Task.V2A, Task.EDIT) and frames is None:
            frames = request.video.shape[1]
        if frames is None:
            groups = max(0, round((duration_s * fps - 1) / tf))
            frames = 1 + groups * tf
            if abs(frames / fps - duration_s) > 1e-6:
                warnings.warn(
                    f"prompt: the shots add up to {duration_s:g} s; at {fps:g} fps the nearest whole-latent "
                    f"length is {frames} frames ({frames / fps:g} s)",
                    stacklevel=4,
                )
            return frames
        if abs(frames / fps - duration_s) > tf / fps + 1e-9:
            raise PromptError(
                f"num_frames: {frames} frames at {fps:g} fps last {frames / fps:g} s, but the prompt's shots "
                f"add up to {duration_s:g} s (expected agreement within {tf / fps:g} s); leave num_frames "
                "open to take the shots' total"
            )
        return frames

    # -- preparation --------------------------------------------------------------------------
    def prepare(
        self, request: GenerationRequest, *, sampling: SamplingConfig | None = None
    ) -> PreparedGeneration:
        """Validate sizes, encode prompt and media, draw the noise: everything sampling needs."""
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"request: expected a GenerationRequest, got {type(request).__name__}")
        if request.refine_to is not None:
            raise SkyReelsError(
                "refine_to: prepare() builds one pass; call pipe(request), which runs the base pass and the "
                "refiner (skyreels_v4.pipeline.refine)"
            )
        sampling = self.sampling if sampling is None else sampling
        plan = plan_prompt(
            request.prompt,
            reference_images=request.reference_images,
            reference_videos=request.reference_videos,
            reference_audios=request.reference_audios,
        )
        frames, height, width, fps = self._resolve_size(request, plan.duration_s)
        with self._onloaded(self.video_vae), self._onloaded(self.audio_vae):
            return self._prepare(request, sampling, plan, frames, height, width, fps)

    def _prepare(
        self,
        request: GenerationRequest,
        sampling: SamplingConfig,
        plan: PromptPlan,
        frames: int,
        height: int,
        width: int,
        fps: float,
    ) -> PreparedGeneration:
        device, vae, codec = self.device, self.video_vae, self.audio_vae
        c = self.transformer.video_latent_channels
        t = vae.num_latent_frames(frames)
        h, w = height // vae.spatial_factor, width // vae.spatial_factor
        if codec is None:
            # No audio VAE (a video-only task, checked by _resolve_size): the audio branch still runs on
            # σ = 1 noise, one audio latent per video latent frame; nothing is decoded from it.
            num_audio, num_samples = t, 0
        else:
            num_audio = codec.num_latents_for_frames(frames, fps)
            num_samples = round(frames / fps * codec.sample_rate)
        audio_channels = self.transformer.audio_latent_channels

        # Noise first, from one CPU generator: same seed -> same noise on every device.
        generator = torch.Generator().manual_seed(request.seed)
        video_noise = torch.randn(1, c, t, h, w, generator=generator).to(device)
        audio_noise = torch.randn(1, audio_channels, num_audio, generator=generator).to(device)

        positive, negative_text = self.encode_prompt(plan.text, request.negative_prompt)
        positive, negative_text = positive.to(device=device), negative_text.to(device=device)

        # Video condition (eq. 7).
        video_given = request.task is Task.V2A
        if video_given:
            source = request.video[:, :frames][None].to(device)
            with torch.no_grad():
                cond_latents = vae.encode(source).float()
            latent_mask = torch.ones(1, 1, t, h, w, device=device)
            condition_noise = cond_latents
            video_noise = cond_latents.clone()
        else:
            spec, source = self._task_spec(request, frames, height, width)
            cond = build_inpaint_condition(
                spec,
                vae=vae,
                source_video=None if source is None else source[None].to(device),
                video_shape=(1, frames, height, width) if source is None else None,
                device=device if source is None else None,
            )
            cond_latents, latent_mask = cond.conditional_latents.float(), cond.latent_mask.float()
            condition_noise = video_noise

        # Audio condition: a given track (a2v) or a kept prefix (extension).
        audio_fields: dict[str, Tensor | None] = {}
        audio_given = request.task is Task.A2V
        if request.audio is not None:
            wave = request.audio[None].to(device)
            with torch.no_grad():
                audio_latents = codec.encode(wave, request.audio_sample_rate).float()
            if audio_given:
                audio_latents = _fit_length(audio_latents, num_audio, "audio", warn=True)
                audio_mask = torch.ones(1, 1, num_audio, device=device)
                audio_noise = audio_latents.clone()
            else:  # extension: the source clip's audio is the kept prefix
                kept = min(audio_latents.shape[-1], num_audio - 1)
                padded = torch.zeros(1, audio_channels, num_audio, device=device)
                padded[..., :kept] = audio_latents[..., :kept]
                audio_latents = padded
                audio_mask = torch.zeros(1, 1, num_audio, device=device)
                audio_mask[..., :kept] = 1
            audio_fields = {
                "audio_conditional_latents": audio_latents,
                "audio_latent_mask": audio_mask,
                "audio_condition_noise": audio_noise if audio_given else audio_noise.clone(),
            }

        references = self._references(plan, request.audio_sample_rate, (t, h, w), device)
        guidance = None
        if self.transformer.config.video.guidance_embedding:
            value = sampling.embedded_guidance  # the per-call sampling, not the folder's
            if value is None:
                raise SkyReelsError("sampling.embedded_guidance: this model has a guidance embedding; set it")
            guidance = torch.full((1,), 1000.0 * value, device=device)
        base = dict(
            conditional_latents=cond_latents,
            latent_mask=latent_mask,
            condition_noise=condition_noise,
            video_given=torch.tensor([video_given], device=device),
            audio_given=torch.tensor([audio_given], device=device),
            guidance=guidance,
            **audio_fields,
            **references,
        )
        condition = ModelCondition(
            text_tokens=positive.tokens, text_mask=positive.mask, pooled_text=positive.pooled, **base
        )
        dropped: dict[str, None] = {}
        if sampling.negative_references is NegativeReferences.DROP:
            dropped = dict.fromkeys(
                ("video_reference", "video_positions", "video_key_mask", "audio_reference")
            )
        negative = replace(
            condition,
            text_tokens=negative_text.tokens,
            text_mask=negative_text.mask,
            pooled_text=negative_text.pooled,
            **dropped,
        )
        return PreparedGeneration(
            request=request,
            prompt=plan,
            num_frames=frames,
            height=height,
            width=width,
            fps=fps,
            num_audio_samples=num_samples,
            video_noise=video_noise,
            audio_noise=audio_noise,
            condition=condition,
            negative=negative,
        )

    def _task_spec(
        self, request: GenerationRequest, frames: int, height: int, width: int
    ) -> tuple[TaskSpec, Tensor | None]:
        task, tf = request.task, self.video_vae.temporal_factor
        if task in (Task.T2AV, Task.T2V, Task.T2A, Task.A2V):
            return TextToVideo(), None
        if task in (Task.I2V, Task.I2AV):
            return ImageToVideo(), video_from_keyframes({0: request.image[None]}, num_frames=frames)[0]
        if task is Task.INTERPOLATE:
            keyframes = {0: request.image[None]}
            keyframes.update({frames - tf + j: request.last_image[None] for j in range(tf)})
            return StartEndInterpolation(), video_from_keyframes(keyframes, num_frames=frames)[0]
        if task is Task.EXTEND:
            prefix = request.video
            kept = prefix.shape[1]
            if kept >= frames:
                raise SkyReelsError(
                    f"num_frames: an extension must be longer than its source ({kept} frames), got {frames}"
                )
            if (kept - 1) % tf:
                warnings.warn(
                    f"video: the source's {kept} frames do not fill whole latent frames (1 + {tf}k); "
                    "the last "
                    f"{(kept - 1) % tf} frame(s) are regenerated to continue seamlessly",
                    stacklevel=3,
                )
            source = torch.full((3, frames, height, width), -1.0, dtype=prefix.dtype)
            source[:, :kept] = prefix
            return VideoExtension(num_kept_frames=kept), source
        if task is Task.EDIT:
            mask = request.edit_mask[:frames] if request.edit_mask.ndim == 3 else request.edit_mask
            return VideoEditing(keep_mask=mask), request.video[:, :frames]
        raise SkyReelsError(f"task: {task.value!r} has no video condition")  # pragma: no cover

    def _references(
        self, plan: PromptPlan, sample_rate: int | None, grid: tuple[int, int, int], device: torch.device
    ) -> dict:
        """Encode and pack the references in prompt order (eq. 8-9): visual ones as negative-time
        frames of the video branch, audio ones prepended to the audio branch."""
        out: dict[str, Tensor | None] = {}
        clips = plan.visual_references
        if clips:
            latents = []
            for label, clip in zip(plan.visual_labels, clips, strict=True):
                frames = clip.shape[1]
                usable = 1 + (frames - 1) // self.video_vae.temporal_factor * self.video_vae.temporal_factor
                cell = self.video_vae.spatial_factor * self.transformer.config.video.patch_size[1]
                if clip.shape[2] % cell or clip.shape[3] % cell:
                    raise SkyReelsError(
                        f"{label}: reference sizes must be multiples of {cell}, got {tuple(clip.shape[2:])}"
                    )
                with torch.no_grad():
                    latents.append(self.video_vae.encode(clip[:, :usable][None].to(device)).float())
            packed = pack_video_references(
                latents, video_grid=grid, patch_size=self.transformer.config.video.patch_size
            )
            out["video_reference"] = packed.concat_input()
            out["video_positions"] = packed.positions[None].to(device)
            out["video_key_mask"] = packed.key_valid.to(device)
        if plan.audio_references:
            parts = []
            for wave in plan.audio_references:
                with torch.no_grad():
                    parts.append(self.audio_vae.encode(wave[None].to(device), sample_rate).float())
            out["audio_reference"] = torch.cat(parts, dim=-1)
        return out

    # -- long clips ---------------------------------------------------------------------------
    def generate_long(
        self,
        request: GenerationRequest,
        *,
        total_frames: int,
        window_frames: int,
        overlap_frames: int,
        audio_crossfade: float = DEFAULT_AUDIO_CROSSFADE,
        **call: Any,
    ) -> LongClip:
        """Chained extension past the trained length (``skyreels_v4.pipeline.long``); with
        ``refine_to`` every window is refined and the next one extends the refined frames."""
        return generate_long(
            self,
            request,
            total_frames=total_frames,
            window_frames=window_frames,
            overlap_frames=overlap_frames,
            audio_crossfade=audio_crossfade,
            **call,
        )

    # -- sampling -----------------------------------------------------------------------------
    def __call__(
        self,
        request: GenerationRequest | str | None = None,
        *,
        sampling: SamplingConfig | None = None,
        callback: StepCallback | None = None,
        progress: bool = True,
        **fields: Any,
    ) -> GenerationOutput:
        """Generate. ``request`` is a ``GenerationRequest``, or a prompt with request fields as keywords
        (``pipe("A red circle ...", task="t2av", seed=0)``). ``sampling`` overrides the folder's config
        for this call; ``callback(step, sigma, (video, audio))`` runs after every solver step."""
        if isinstance(request, str):
            request = GenerationRequest(prompt=request, **fields)
        elif request is None:
            request = GenerationRequest(**fields)
        elif fields:
            request = request.replace(**fields)
        sampling = self.sampling if sampling is None else sampling
        if not isinstance(sampling, SamplingConfig):
            raise TypeError(f"sampling: expected a SamplingConfig, got {type(sampling).__name__}")
        if request.refine_to is not None:
            return generate_refined(self, request, sampling=sampling, callback=callback, progress=progress)
        prepared = self.prepare(request, sampling=sampling)
        video, audio = self.sample(prepared, sampling=sampling, callback=callback, progress=progress)
        return self.decode(prepared, video, audio)

    @torch.no_grad()
    def sample(
        self,
        prepared: PreparedGeneration,
        *,
        sampling: SamplingConfig | None = None,
        callback: StepCallback | None = None,
        progress: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Solve from the prepared noise to clean latents (conditioned latents pasted back exactly)."""
        sampling = self.sampling if sampling is None else sampling
        guidance = sampling.guidance
        if _structure(prepared.condition) != _structure(prepared.negative):
            # Dropped references: the branches hold different token counts, so they cannot share a batch.
            guidance = replace(guidance, batching=GuidanceBatching.SEQUENTIAL)
        model, guidance = denoiser_for_task(
            self.transformer,
            prepared.request.task,
            guidance,
            packed_keyframes=prepared.condition.keyframes is not None,
        )
        denoiser = JointGuidedDenoiser(
            model,
            condition=prepared.condition,
            video_negative_condition=prepared.negative,
            audio_negative_condition=prepared.negative,
            config=guidance,
        )
        sigmas = flow_sigmas(
            sampling.num_steps, shift=sampling.shift, form=sampling.schedule, device=self.device
        )
        bar = tqdm(total=sampling.num_steps, desc="sampling", disable=not progress, leave=False)

        def step(index: int, sigma: float, state: tuple[Tensor, Tensor]) -> None:
            bar.update(1)
            if callback is not None:
                callback(index, sigma, state)

        try:
            # Zero-initialised text cross-attention (a converted checkpoint) adds nothing: skip it.
            with self._onloaded(self.transformer), skipping_zero_text_cross_attention(self.transformer):
                video, audio = sample(
                    denoiser,
                    (prepared.video_noise, prepared.audio_noise),
                    sigmas,
                    solver=sampling.solver,
                    callback=step,
                )
        finally:
            bar.close()
            if self._block_offload is not None:
                self._block_offload.offload_all()
        c = prepared.condition
        video = torch.where(c.latent_mask.bool(), c.conditional_latents, video)
        if c.audio_latent_mask is not None:
            audio = torch.where(c.audio_latent_mask.bool(), c.audio_conditional_latents, audio)
        if not (bool(torch.isfinite(video).all()) and bool(torch.isfinite(audio).all())):
            raise NonFiniteError("sampling produced NaN/inf latents")
        return video, audio

    @torch.no_grad()
    def decode(self, prepared: PreparedGeneration, video: Tensor, audio: Tensor) -> GenerationOutput:
        """Latents -> frames and waveform for the request's task (v2a returns the given video as is)."""
        with self._onloaded(self.video_vae), self._onloaded(self.audio_vae):
            return self._decode(prepared, video, audio)

    def _decode(self, prepared: PreparedGeneration, video: Tensor, audio: Tensor) -> GenerationOutput:
        request, task = prepared.request, prepared.request.task
        frames = None
        if task.outputs_video:
            if task is Task.V2A:
                frames = request.video[:, : prepared.num_frames].float().cpu()
            else:
                frames = self.video_vae.decode(video.to(self.device))[0].float().clamp(-1, 1).cpu()
                frames = frames[:, : prepared.num_frames]
        wave = None
        if task is Task.A2V:
            # The given track itself (at the codec's rate and channel count), as v2a returns the given
            # video: decoding its latents would pass the user's audio through a codec that need not be
            # exact (an audio VAE, or the spectrogram codec's Griffin-Lim phase).
            given = request.audio[None].float().to(self.device)
            wave = self.audio_vae.convert_waveform(given, request.audio_sample_rate)[0].clamp(-1, 1).cpu()
            wave = _fit_samples(wave, prepared.num_audio_samples)
        elif task.outputs_audio:
            wave = self.audio_vae.decode(audio.to(self.device))[0].float().clamp(-1, 1).cpu()
            wave = _fit_samples(wave, prepared.num_audio_samples)
        return GenerationOutput(
            video=frames,
            audio=wave,
            fps=prepared.fps,
            sample_rate=self.audio_vae.sample_rate if self.audio_vae is not None else 0,
            video_latents=video.cpu(),
            audio_latents=audio.cpu(),
            task=task.value,
        )


def _structure(condition: ModelCondition) -> tuple[bool, ...]:
    """Which optional fields a condition holds (conditions batch only when these agree)."""
    return tuple(getattr(condition, name) is None for name in condition.__dataclass_fields__)


def _fit_length(latents: Tensor, length: int, name: str, *, warn: bool) -> Tensor:
    """Crop or zero-pad ``[B, C, L]`` to ``length`` latents (saying so when it is not a rounding)."""
    have = latents.shape[-1]
    if have == length:
        return latents
    if warn and abs(have - length) > 1:
        warnings.warn(
            f"{name}: {have} audio latents for a clip of {length}; "
            f"{'cropped' if have > length else 'padded with silence'} to the video length",
            stacklevel=4,
        )
    return crop_or_pad(latents, length)


def crop_or_pad(values: Tensor, length: int) -> Tensor:
    """The last dim cropped or zero-padded to ``length`` (audio samples or latents to a clip's length)."""
    have = values.shape[-1]
    if have >= length:
        return values[..., :length]
    return torch.nn.functional.pad(values, (0, length - have))


def _fit_samples(wave: Tensor, samples: int) -> Tensor:
    if wave.shape[-1] >= samples:
        return wave[..., :samples]
    return torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))
