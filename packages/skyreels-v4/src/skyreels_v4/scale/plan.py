"""Memory and FLOP planner for training and sampling beyond one device (issue 15; paper 3.1, 4.5).

``plan(...)`` answers, for a preset, a clip format and a GPU count: how many parameters, how many
tokens, how many FLOPs per training step and per generated clip (direct vs the paper's low-res +
keyframes + refiner path), and, for every parallel layout ``dp_replicate x dp_shard x sp``, how
much memory each device needs and whether it fits.

Where each number comes from:

- parameters: the real configuration instantiated on the meta device (``parameter_counts``);
- tokens: causal VAE 4x in time (``T = 1 + (F-1)/4``), 8x8 in space, patch 1x2x2; audio 1024x at
  44.1 kHz, patch 1 (``VideoFormat`` of skyreels-refiner-vsa);
- FLOPs: one forward of the whole joint model on fake tensors under ``FlopCounterMode`` (every
  matmul, attention's quadratic terms included; elementwise ops not counted). Training = forward +
  backward, backward = 2x forward for the matmuls and 2.5x for attention (flash-style backward
  recomputes ``QK^T``); activation checkpointing adds one more forward of the blocks;
- parameter state per device (FSDP2, weights sharded over ``dp_shard x sp`` ranks, replicated over
  ``dp_replicate``): fp32 master weights 4 B, fp32 gradients 4 B, AdamW moments 8 B (+ fp32 EMA 4 B)
  per parameter / shard count, plus the gathered bf16 weights of two units (current + prefetched)
  and one unit's fp32 gradient reduce buffer;
- activations: ``activations.activation_memory`` (checked against measured CPU memory);
- fits: total <= ``gpu_memory x (1 - reserve)`` (reserve: CUDA context, allocator fragmentation,
  communication buffers).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from skyreels_mmdit_blocks import (
    JointAudioVideoTransformer,
    JointAudioVideoTransformerConfig,
    joint_preset,
    parameter_counts,
)
from skyreels_refiner_vsa.efficiency import EfficiencyScenario, VideoFormat, flop_counter, refiner_flops
from skyreels_v4.scale.activations import ActivationMemory, activation_memory

__all__ = [
    "AUDIO_HOP",
    "AUDIO_SAMPLE_RATE",
    "RESOLUTIONS",
    "ClipTokens",
    "ForwardFlops",
    "LayoutPlan",
    "ParallelLayout",
    "Plan",
    "clip_tokens",
    "count_forward_flops",
    "default_layouts",
    "parse_layout",
    "parse_memory",
    "parse_resolution",
    "plan",
]

AUDIO_SAMPLE_RATE = 44_100
AUDIO_HOP = 1024  # audio VAE: 1024 samples per latent
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "360p": (640, 360),
    "480p": (848, 480),
    "540p": (960, 544),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}
_ATTENTION_MODULE = re.compile(r"\.attention$")
_GIB = 1024**3


def parse_resolution(value: str) -> tuple[int, int]:
    """``"1080p"`` or ``"WIDTHxHEIGHT"`` -> (width, height)."""
    if not isinstance(value, str):
        raise TypeError(f"resolution must be a str; got {type(value).__name__}")
    key = value.strip().lower()
    if key in RESOLUTIONS:
        return RESOLUTIONS[key]
    match = re.fullmatch(r"(\d+)x(\d+)", key)
    if not match or min(int(match[1]), int(match[2])) < 8:
        raise ValueError(
            f"resolution must be one of {sorted(RESOLUTIONS)} or WIDTHxHEIGHT (each >= 8); got {value!r}"
        )
    return int(match[1]), int(match[2])


def parse_memory(value: str | float | int) -> int:
    """``"80GB"`` / ``"80GiB"`` / ``"141G"`` / bytes -> bytes (GB and G are read as GiB, as GPU
    vendors label their memory: an "80 GB" H100 has 80 GiB)."""
    if isinstance(value, bool):
        raise TypeError("gpu_memory must be a size such as '80GB'; got a bool")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"gpu_memory must be a positive number of bytes; got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise TypeError(f"gpu_memory must be a str such as '80GB' or bytes; got {type(value).__name__}")
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb|m)?\s*", value.lower())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"gpu_memory must look like '80GB', '141GiB' or '512MB'; got {value!r}")
    unit = (match[2] or "gb")[0]
    return int(float(match[1]) * (_GIB if unit == "g" else 1024**2))


@dataclass(frozen=True, kw_only=True)
class ParallelLayout:
    """``dp_replicate x dp_shard x sp`` ranks. Weights are sharded over ``dp_shard x sp`` (FSDP2;
    HSDP when ``dp_replicate > 1``); video tokens over ``sp`` (Ulysses)."""

    dp_replicate: int = 1
    dp_shard: int = 1
    sp: int = 1

    def __post_init__(self) -> None:
        for name in ("dp_replicate", "dp_shard", "sp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")

    @property
    def world_size(self) -> int:
        return self.dp_replicate * self.dp_shard * self.sp

    @property
    def shard_size(self) -> int:
        return self.dp_shard * self.sp

    def __str__(self) -> str:
        return f"{self.dp_replicate}x{self.dp_shard}x{self.sp}"


def parse_layout(value: str) -> ParallelLayout:
    """``"RxSxP"`` (dp_replicate x dp_shard x sp) -> ParallelLayout."""
    match = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", str(value).lower())
    if not match:
        raise ValueError(f"layout must be DP_REPLICATExDP_SHARDxSP such as '1x4x2'; got {value!r}")
    return ParallelLayout(dp_replicate=int(match[1]), dp_shard=int(match[2]), sp=int(match[3]))


@dataclass(frozen=True)
class ClipTokens:
    """Latent grids and token counts of one clip."""

    pixel_frames: int
    video_latent: tuple[int, int, int]  # (T, h, w)
    video_tokens: int
    audio_latents: int
    audio_tokens: int


def clip_tokens(
    config: JointAudioVideoTransformerConfig, width: int, height: int, fps: float, seconds: float
) -> ClipTokens:
    """Tokens of a ``width x height`` clip of ``seconds`` at ``fps`` (VAE factors in the module doc)."""
    fmt = VideoFormat(width=width, height=height, fps=fps, seconds=seconds)
    patch = config.video.patch_size
    latent = fmt.latent_shape(patch=patch)
    audio_latents = math.ceil(seconds * AUDIO_SAMPLE_RATE / AUDIO_HOP)
    return ClipTokens(
        pixel_frames=fmt.pixel_frames,
        video_latent=latent,
        video_tokens=math.prod(fmt.token_grid(patch=patch)),
        audio_latents=audio_latents,
        audio_tokens=audio_latents // config.audio.patch_size[0],
    )


@dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one forward: ``attention`` (every attention kernel's QK^T and PV) and the rest."""

    attention: int
    other: int

    @property
    def total(self) -> int:
        return self.attention + self.other

    @property
    def training(self) -> int:
        """Forward + backward (2x the matmuls, 2.5x attention)."""
        return self.total + 2 * self.other + (5 * self.attention) // 2


def count_forward_flops(
    config: JointAudioVideoTransformerConfig,
    *,
    video_latent: tuple[int, int, int],
    audio_latents: int,
    text_tokens: int,
    video_reference: tuple[int, int, int] | None = None,
) -> ForwardFlops:
    """One joint forward (batch 1) on fake tensors under FlopCounterMode."""
    counter = flop_counter()
    v = config.video
    with FakeTensorMode():
        model = JointAudioVideoTransformer(config)
        extra: dict[str, torch.Tensor] = {}
        if v.pooled_text_dim is not None:
            extra["pooled_text"] = torch.empty(1, v.pooled_text_dim)
        if v.guidance_embedding or config.audio.guidance_embedding:
            extra["guidance"] = torch.empty(1)
        if video_reference is not None:
            extra["video_reference_latents"] = torch.empty(1, v.in_channels, *video_reference)
        with counter:
            model(
                torch.empty(1, v.in_channels, *video_latent),
                torch.empty(1, config.audio.in_channels, audio_latents),
                timestep=torch.empty(1),
                text_tokens=torch.empty(1, text_tokens, v.text_dim),
                **extra,
            )
    counts = counter.get_flop_counts()
    attention = sum(sum(ops.values()) for name, ops in counts.items() if _ATTENTION_MODULE.search(name))
    return ForwardFlops(attention=attention, other=counter.get_total_flops() - attention)


@dataclass(frozen=True)
class LayoutPlan:
    """Per-device memory (bytes) of one layout, and whether it fits."""

    layout: ParallelLayout
    video_tokens_per_device: int
    parameter_state: int  # master weights, gradients, AdamW moments (+ EMA), sharded
    gathered_weights: int  # bf16 weights of two units + one unit's fp32 reduce buffer
    activations: ActivationMemory
    activations_checkpointed: ActivationMemory
    budget: int

    @property
    def total(self) -> int:
        return self.parameter_state + self.gathered_weights + self.activations.peak

    @property
    def total_checkpointed(self) -> int:
        return self.parameter_state + self.gathered_weights + self.activations_checkpointed.peak

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    @property
    def fits_checkpointed(self) -> bool:
        return self.total_checkpointed <= self.budget


@dataclass(frozen=True)
class Plan:
    preset: str
    width: int
    height: int
    fps: float
    seconds: float
    gpus: int
    gpu_memory: int
    tokens: ClipTokens
    text_tokens: int
    batch: int
    parameters: int
    training_forward: ForwardFlops
    training_step_flops: int  # whole batch, no checkpointing
    training_step_flops_checkpointed: int
    steps: int
    guidance_passes: int
    generation_direct_flops: int
    generation_efficient_flops: int
    efficient_path: str
    layouts: tuple[LayoutPlan, ...]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_layouts(gpus: int, num_heads: int) -> list[ParallelLayout]:
    """Every ``r x s x p = gpus`` with ``num_heads % p == 0`` (Ulysses splits heads)."""
    return [
        ParallelLayout(dp_replicate=r, dp_shard=gpus // (r * p), sp=p)
        for p in _divisors(gpus)
        if num_heads % p == 0
        for r in _divisors(gpus // p)
    ]


def _check_positive(name: str, value: object, kind: type = int) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if not ok or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a positive {'number' if kind is float else 'int'}; got {value!r}")


def plan(
    preset: str,
    resolution: str,
    fps: float,
    seconds: float,
    gpus: int,
    gpu_memory: str | int,
    layouts: list[ParallelLayout] | None = None,
    *,
    batch: int = 1,
    text_tokens: int = 256,
    ema: bool = False,
    reserve: float = 0.1,
    steps: int = 50,
    refiner_steps: int = 50,
    guidance_passes: int = 2,
    low_resolution: str = "480p",
    low_fps: float = 16,
    keyframes: int = 8,
    sparsity: float = 0.875,
) -> Plan:
    """The plan for ``preset`` (``tiny``/``small``/``full``) at ``resolution``/``fps``/``seconds`` on
    ``gpus`` devices of ``gpu_memory`` each; ``layouts`` default to every valid factorisation.

    ``batch``: samples per data-parallel rank per step. ``guidance_passes``: model forwards per
    sampling step (2 = classifier-free guidance). The efficient path: the base model denoises a
    ``low_resolution``/``low_fps`` clip with ``keyframes`` high-res keyframes as in-context
    references for ``steps`` steps, then the VSA refiner (``sparsity``) the target for
    ``refiner_steps`` steps (video only: the refiner has no audio branch).
    """
    if not isinstance(preset, str) or preset not in ("tiny", "small", "full"):
        raise ValueError(f"preset must be one of 'tiny', 'small', 'full'; got {preset!r}")
    config = joint_preset(preset)  # type: ignore[arg-type]
    width, height = parse_resolution(resolution)
    low_width, low_height = parse_resolution(low_resolution)
    _check_positive("fps", fps, float)
    _check_positive("seconds", seconds, float)
    _check_positive("low_fps", low_fps, float)
    for name, value in (
        ("gpus", gpus),
        ("batch", batch),
        ("text_tokens", text_tokens),
        ("steps", steps),
        ("refiner_steps", refiner_steps),
        ("guidance_passes", guidance_passes),
    ):
        _check_positive(name, value)
    if isinstance(keyframes, bool) or not isinstance(keyframes, int) or keyframes < 0:
        raise ValueError(f"keyframes must be a non-negative int; got {keyframes!r}")
    if not (isinstance(reserve, (int, float)) and 0 <= reserve < 1):
        raise ValueError(f"reserve must be in [0, 1); got {reserve!r}")
    if not (isinstance(sparsity, (int, float)) and 0 <= sparsity < 1):
        raise ValueError(f"sparsity must be in [0, 1); got {sparsity!r}")
    memory = parse_memory(gpu_memory)
    heads = config.video.num_heads
    if layouts is None:
        layouts = default_layouts(gpus, heads)
    for layout in layouts:
        if not isinstance(layout, ParallelLayout):
            raise TypeError(f"layouts must hold ParallelLayout values; got {type(layout).__name__}")
        if layout.world_size != gpus:
            raise ValueError(f"layout {layout} uses {layout.world_size} ranks; gpus is {gpus}")
        if heads % layout.sp:
            raise ValueError(f"layout {layout}: sp={layout.sp} must divide the {heads} attention heads")

    tokens = clip_tokens(config, width, height, fps, seconds)
    counts = parameter_counts(config)
    forward = count_forward_flops(
        config,
        video_latent=tokens.video_latent,
        audio_latents=tokens.audio_latents,
        text_tokens=text_tokens,
    )
    block_fraction = 1.0 - (counts.video.embeddings + counts.audio.embeddings) / counts.total
    step = batch * forward.training
    step_checkpointed = step + int(batch * forward.total * block_fraction)

    # Generation: direct, and the efficient path (base + keyframes at low res, then the VSA refiner).
    passes = steps * guidance_passes
    direct = passes * forward.total
    target = VideoFormat(width=width, height=height, fps=fps, seconds=seconds)
    low = VideoFormat(width=low_width, height=low_height, fps=low_fps, seconds=seconds)
    _, h, w = target.latent_shape(patch=config.video.patch_size)
    base = count_forward_flops(
        config,
        video_latent=low.latent_shape(patch=config.video.patch_size),
        audio_latents=tokens.audio_latents,
        text_tokens=text_tokens,
        video_reference=(keyframes, h, w) if keyframes else None,
    )
    scenario = EfficiencyScenario(
        target=target, low_res=low, num_keyframes=keyframes, text_tokens=text_tokens, sparsity=sparsity
    )
    _, vsa_refiner = refiner_flops(config.video, scenario)
    efficient = passes * base.total + refiner_steps * guidance_passes * vsa_refiner.total

    # Memory per layout.
    unit_params = max(
        counts.video.dual_blocks // max(config.video.num_dual_blocks, 1),
        counts.video.single_blocks // max(config.video.num_single_blocks, 1),
    ) * 2 + counts.exchanges // max(len(config.exchange_pairs), 1)
    per_param = 16 + (4 if ema else 0)
    budget = int(memory * (1 - reserve))
    video_input = config.video.in_channels * math.prod(tokens.video_latent)
    audio_input = config.audio.in_channels * tokens.audio_latents
    rows = []
    for layout in layouts:
        local_video = math.ceil(tokens.video_tokens / layout.sp)
        kwargs = dict(
            video_tokens=local_video,
            audio_tokens=tokens.audio_tokens,
            text_tokens=text_tokens,
            batch=batch,
            compute_bytes=2,
            video_input_elements=video_input // layout.sp,
            audio_input_elements=audio_input,
        )
        rows.append(
            LayoutPlan(
                layout=layout,
                video_tokens_per_device=local_video,
                parameter_state=math.ceil(per_param * counts.total / layout.shard_size),
                gathered_weights=2 * 2 * unit_params + 4 * unit_params,
                activations=activation_memory(config, checkpointing=False, **kwargs),
                activations_checkpointed=activation_memory(config, checkpointing=True, **kwargs),
                budget=budget,
            )
        )
    return Plan(
        preset=preset,
        width=width,
        height=height,
        fps=fps,
        seconds=seconds,
        gpus=gpus,
        gpu_memory=memory,
        tokens=tokens,
        text_tokens=text_tokens,
        batch=batch,
        parameters=counts.total,
        training_forward=forward,
        training_step_flops=step,
        training_step_flops_checkpointed=step_checkpointed,
        steps=steps,
        guidance_passes=guidance_passes,
        generation_direct_flops=direct,
        generation_efficient_flops=efficient,
        efficient_path=(
            f"base {low_width}x{low_height} {low_fps:g} fps + {keyframes} keyframes x {steps} steps, "
            f"VSA refiner (sparsity {sparsity}) x {refiner_steps} steps"
        ),
        layouts=tuple(rows),
    )
