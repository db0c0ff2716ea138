"""The efficient inference path of paper section 4.5: base model at low resolution, then the refiner.

``GenerationRequest(refine_to=(H, W))`` asks for the output at ``H x W``: the base model generates the
whole clip (video and audio) at the request's ``height x width``, then the refiner
(``skyreels_refiner_vsa.VideoRefiner``, VSA in every block) samples the high-resolution latents from
noise, reading ``Concat(V, I, M, U)``:

- ``U``: the base model's latents interpolated to the target grid (space, and time when the refiner's
  ``frame_factor`` k > 1: ``T' = k·(T - 1) + 1`` latent frames at k times the frame rate);
- ``I, M`` (eq. 7): the high-resolution conditions of the task, encoded at the target size: the i2v
  first frame, the interpolation end frames, an extension's prefix, an edit's kept region. These are
  the exact high-res keyframes of 4.5 (``M = 1``; they stay on their exact noise path, so the output
  keeps them), placed by the task; the rest is ``I`` = the black-frame latent, ``M = 0``.

With ``refine_to`` the request's pixel inputs (image, last_image, video, edit_mask) are given at the
output size; the base pass sees them resized to ``height x width`` (antialiased bilinear; the mask by
nearest). Audio is generated once by the base pass and kept.

``GenerationRequest(keyframes=(i, j, ...))`` adds 4.5's joint prediction: the base pass also denoises
the clip's latent frames ``i, j, ...`` at the ``refine_to`` size, in the same sequence as the low-res
clip (``skyreels_v4.model.keyframes``; a model trained with ``keyframe_probability``), and U holds
those predicted keyframes in place of the interpolated frames (at refined frame ``k·i``).

``RefinerComponent`` is the pipeline folder's ``refiner/`` component: the refiner's weights +
``config.json`` (its ``VideoRefinerConfig`` and ``RefineConfig``), loaded on the meta device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from skyreels_flow_matching import ScheduleForm, Solver, flow_sigmas, sample, sigma_to_timestep
from skyreels_inpaint_conditioning import build_inpaint_condition
from skyreels_refiner_vsa import (
    VideoRefiner,
    VideoRefinerConfig,
    VSAConfig,
    build_refiner_condition,
    interpolated_num_frames,
    refiner_from_base,
)
from skyreels_v4.errors import NonFiniteError, SkyReelsError
from skyreels_v4.model import KeyframeLayout, ModelCondition, pack_keyframes, unpack_keyframes
from skyreels_v4.model.config_io import from_plain, to_plain
from skyreels_v4.model.weights import build_and_load, read_component_config, save_component
from skyreels_v4.pipeline.request import GenerationRequest, Task

if TYPE_CHECKING:
    from skyreels_v4.pipeline.output import GenerationOutput
    from skyreels_v4.pipeline.pipeline import PreparedGeneration, SkyReelsV4Pipeline

__all__ = [
    "RefineConfig",
    "RefinerComponent",
    "base_request",
    "generate_refined",
    "resize_pixels",
    "with_keyframes",
]

# Tasks whose video is generated and whose conditions the refiner can take at high resolution.
_REFINABLE = (
    Task.T2AV,
    Task.T2V,
    Task.I2V,
    Task.I2AV,
    Task.INTERPOLATE,
    Task.EXTEND,
    Task.EDIT,
    Task.A2V,
)
_SOURCE_VIDEO_TASKS = (Task.EXTEND, Task.EDIT)


@dataclass(frozen=True, kw_only=True)
class RefineConfig:
    """How the refiner samples (stored in ``refiner/config.json``).

    Attributes:
        num_steps: refiner solver steps from σ = 1.
        shift, schedule, solver: the σ grid and solver (skyreels-flow-matching).
        guidance: classifier-free guidance scale with the request's negative prompt (1 = off).
        frame_factor: k of the frame interpolation (1 = same frame rate; 2 = 16 -> 32 fps).
    """

    num_steps: int = 8
    shift: float = 3.0
    schedule: ScheduleForm = ScheduleForm.DIFFUSERS
    solver: Solver = Solver.EULER
    guidance: float = 1.0
    frame_factor: int = 1

    def __post_init__(self) -> None:
        for name, low, high in (("num_steps", 1, 1000), ("frame_factor", 1, 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
        for name in ("shift", "guidance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if self.shift <= 0:
            raise ValueError(f"shift: expected > 0, got {self.shift!r}")
        if not 0 <= self.guidance <= 50:
            raise ValueError(f"guidance: expected a scale in [0, 50], got {self.guidance!r}")
        if not isinstance(self.schedule, ScheduleForm):
            raise TypeError(f"schedule: expected a ScheduleForm, got {self.schedule!r}")
        if not isinstance(self.solver, Solver):
            raise TypeError(f"solver: expected one of {[s.value for s in Solver]}, got {self.solver!r}")


class RefinerComponent:
    """A ``VideoRefiner`` with its sampling config: the ``refiner/`` folder of a pipeline."""

    CLASS_NAME = "RefinerComponent"

    def __init__(self, refiner: VideoRefiner, *, config: RefineConfig | None = None) -> None:
        if not isinstance(refiner, VideoRefiner):
            raise TypeError(f"refiner: expected a VideoRefiner, got {type(refiner).__name__}")
        config = RefineConfig() if config is None else config
        if not isinstance(config, RefineConfig):
            raise TypeError(f"config: expected a RefineConfig, got {type(config).__name__}")
        self.refiner, self.config = refiner.eval(), config

    @classmethod
    def from_base(
        cls, transformer: Any, *, vsa: VSAConfig | None = None, config: RefineConfig | None = None
    ) -> RefinerComponent:
        """A refiner initialised from the transformer's video branch (paper 4.5; new weights zero)."""
        return cls(refiner_from_base(transformer.video, vsa=vsa or VSAConfig()), config=config)

    @property
    def latent_channels(self) -> int:
        return self.refiner.config.latent_channels

    def to(self, *args: Any, **kwargs: Any) -> RefinerComponent:
        self.refiner.to(*args, **kwargs)
        return self

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        return save_component(
            self.refiner,
            folder,
            class_name=self.CLASS_NAME,
            config={"refiner": to_plain(self.refiner.config), "sampling": to_plain(self.config)},
        )

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> RefinerComponent:
        data = read_component_config(folder, class_name=cls.CLASS_NAME)
        path = Path(folder) / "config.json"
        model_config = from_plain(VideoRefinerConfig, data.get("refiner"), name=f"{path}: refiner")
        sampling = from_plain(RefineConfig, data.get("sampling", {}), name=f"{path}: sampling")
        refiner = build_and_load(lambda: VideoRefiner(model_config), folder, dtype=dtype, device=device)
        return cls(refiner, config=sampling)


# -- the request of the base pass ----------------------------------------------------------------


def resize_pixels(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """``[3, H, W]`` or ``[3, F, H, W]`` in [-1, 1] -> the same at ``size`` (antialiased bilinear)."""
    frames = pixels[None] if pixels.ndim == 3 else pixels.transpose(0, 1)  # [F, 3, H, W]
    out = torch.nn.functional.interpolate(
        frames.float(), size=size, mode="bilinear", align_corners=False, antialias=True
    ).clamp(-1, 1)
    return out[0].to(pixels.dtype) if pixels.ndim == 3 else out.transpose(0, 1).to(pixels.dtype)


def _resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    out = torch.nn.functional.interpolate(flat, size=size, mode="nearest-exact") > 0.5
    return out.reshape(*mask.shape[:-2], *size)


def base_request(pipe: SkyReelsV4Pipeline, request: GenerationRequest) -> GenerationRequest:
    """Check ``request.refine_to`` and return the base pass's request: media resized to the base size.

    Raises ``SkyReelsError`` naming ``refine_to`` (or the missing ``refiner``) when it cannot be done.
    """
    target = request.refine_to
    refiner = pipe.require("refiner", "refine_to")
    if request.task not in _REFINABLE:
        raise SkyReelsError(
            f"refine_to: task {request.task.value!r} generates no video to refine; "
            f"refinable tasks: {[t.value for t in _REFINABLE]}"
        )
    k = refiner.config.frame_factor
    if k > 1 and request.task in _SOURCE_VIDEO_TASKS:
        raise SkyReelsError(
            f"refine_to: task {request.task.value!r} keeps a source video, which the base pass would need at "
            f"1/{k} of its frame rate; use a refiner with frame_factor 1"
        )
    vae = pipe.require("video_vae", "refine_to")
    cell = vae.spatial_factor * refiner.refiner.config.branch.patch_size[1]
    if target[0] % cell or target[1] % cell:
        raise SkyReelsError(
            f"refine_to: expected multiples of {cell} (VAE {vae.spatial_factor} x refiner patch), "
            f"got {target}"
        )
    height = request.height if request.height is not None else pipe.defaults.height
    width = request.width if request.width is not None else pipe.defaults.width
    if height > target[0] or width > target[1]:
        raise SkyReelsError(
            f"refine_to: expected a size at least the base size {height}x{width} (height x width), "
            f"got {target[0]}x{target[1]}"
        )
    changes: dict[str, Any] = {"refine_to": None, "keyframes": (), "height": height, "width": width}
    for name in ("image", "last_image", "video"):
        pixels = getattr(request, name)
        if pixels is None:
            continue
        if tuple(pixels.shape[-2:]) != tuple(target):
            raise SkyReelsError(
                f"{name}: with refine_to the inputs have the output size {tuple(target)}, "
                f"got {tuple(pixels.shape[-2:])}"
            )
        changes[name] = resize_pixels(pixels, (height, width))
    if request.edit_mask is not None:
        changes["edit_mask"] = _resize_mask(request.edit_mask, (height, width))
    if request.task in _SOURCE_VIDEO_TASKS:
        changes.pop("height"), changes.pop("width")  # the source decides; must equal the base size
    return request.replace(**changes)


# -- refinement ----------------------------------------------------------------------------------


def _high_res_condition(
    pipe: SkyReelsV4Pipeline, request: GenerationRequest, frames: int, size: tuple[int, int]
) -> tuple[Tensor | None, Tensor | None]:
    """The task's conditions encoded at the output size: (I, M) on the high-res grid, or (None, None)."""
    if request.task in (Task.T2AV, Task.T2V, Task.A2V):
        return None, None
    spec, source = pipe._task_spec(request, frames, *size)
    condition = build_inpaint_condition(
        spec, vae=pipe.video_vae, source_video=source[None].to(pipe.device), video_shape=None, device=None
    )
    return condition.conditional_latents.float(), condition.latent_mask.float()


def refine_latents(
    pipe: SkyReelsV4Pipeline,
    request: GenerationRequest,
    prepared: PreparedGeneration,
    low_res: Tensor,
    *,
    progress: bool = True,
    keyframes: tuple[tuple[int, ...], Tensor] | None = None,
) -> tuple[Tensor, int]:
    """Sample the high-res latents ``[1, C, T', h', w']`` from the base output ``low_res``; returns them
    and the output frame count. ``keyframes``: the base model's high-res keyframes (their low-res
    latent frames, ``[1, C, N, h', w']``), which replace the interpolated frames in U."""
    component: RefinerComponent = pipe.refiner
    refiner, config, vae = component.refiner, component.config, pipe.video_vae
    device, dtype = pipe.device, next(refiner.parameters()).dtype
    k = config.frame_factor
    frames = k * (prepared.num_frames - 1) + 1
    height, width = request.refine_to
    grid = (
        interpolated_num_frames(low_res.shape[2], k),
        height // vae.spatial_factor,
        width // vae.spatial_factor,
    )
    with torch.no_grad():
        black = vae.encode(torch.full((1, 3, 1, height, width), -1.0, device=device)).float()
    exact, keep = _high_res_condition(pipe, request, frames, (height, width))
    condition = build_refiner_condition(
        low_res.float(),
        size=grid,
        black_latent=black,
        keyframe_latents=None if keyframes is None else keyframes[1].float(),
        keyframe_indices=() if keyframes is None else tuple(k * i for i in keyframes[0]),
        source_latents=exact,
        keep_mask=None if keep is None else keep.expand(1, 1, *grid).contiguous(),
    )
    generator = torch.Generator().manual_seed((request.seed + 1) % 2**63)
    noise = torch.randn(1, low_res.shape[1], *grid, generator=generator).to(device)
    c = prepared.condition
    positive = (c.text_tokens, c.text_mask, c.pooled_text)
    guided = config.guidance != 1.0
    n = prepared.negative
    texts = positive if not guided else _cat_text(positive, (n.text_tokens, n.text_mask, n.pooled_text))
    guidance = c.guidance if refiner.config.branch.guidance_embedding else None
    batch = 2 if guided else 1
    keep_cells = condition.latent_mask.bool()
    path = noise - condition.conditional_latents  # exact velocity of the kept cells (ε₀ - I)

    def velocity(x: Tensor, sigma: Tensor) -> Tensor:
        inputs = condition.concat(x).to(dtype)
        out = refiner(
            inputs.expand(batch, *inputs.shape[1:]),
            timestep=sigma_to_timestep(sigma.expand(batch)).to(dtype),
            text_tokens=texts[0].to(dtype),
            text_mask=texts[1],
            pooled_text=None if texts[2] is None else texts[2].to(dtype),
            guidance=None if guidance is None else guidance.expand(batch),
        ).float()
        u = out[:1] if not guided else out[1:] + config.guidance * (out[:1] - out[1:])
        if not bool(torch.isfinite(u).all()):
            raise NonFiniteError("the refiner returned NaN/inf velocities; check the refiner folder")
        return torch.where(keep_cells, path, u)

    sigmas = flow_sigmas(config.num_steps, shift=config.shift, form=config.schedule, device=device)
    with torch.no_grad(), pipe._onloaded(refiner):
        high_res = sample(velocity, noise, sigmas, solver=config.solver)
    high_res = torch.where(keep_cells, condition.conditional_latents, high_res)
    return high_res, frames


def _cat_text(a: tuple, b: tuple) -> tuple:
    tokens = torch.cat([a[0], b[0]])
    mask = None if a[1] is None else torch.cat([a[1], b[1]])
    pooled = None if a[2] is None else torch.cat([a[2], b[2]])
    return tokens, mask, pooled


def generate_refined(
    pipe: SkyReelsV4Pipeline,
    request: GenerationRequest,
    *,
    sampling: Any,
    callback: Any = None,
    progress: bool = True,
) -> GenerationOutput:
    """Base pass at ``height x width`` (video + audio), refiner to ``refine_to``, decode (module doc)."""
    low_request = base_request(pipe, request)
    prepared = pipe.prepare(low_request, sampling=sampling)
    layout = None
    if request.keyframes:
        prepared, layout = with_keyframes(pipe, request, prepared)
    video, audio = pipe.sample(prepared, sampling=sampling, callback=callback, progress=progress)
    keyframes = None
    if layout is not None:
        video, predicted = unpack_keyframes(video, layout)
        keyframes = (layout.frame_indices, predicted)
    with pipe._onloaded(pipe.video_vae):
        high_res, frames = refine_latents(
            pipe, request, prepared, video, progress=progress, keyframes=keyframes
        )
    k = pipe.refiner.config.frame_factor
    fps = prepared.fps * k
    samples = prepared.num_audio_samples
    if pipe.audio_vae is not None:  # the same duration as the refined frames
        samples = round(frames / fps * pipe.audio_vae.sample_rate)
    refined = replace(
        prepared,
        request=request,
        num_frames=frames,
        height=request.refine_to[0],
        width=request.refine_to[1],
        fps=fps,
        num_audio_samples=samples,
    )
    output = pipe.decode(refined, high_res, audio)
    return replace(
        output,
        base_video_latents=video.cpu(),
        keyframe_latents=None if keyframes is None else keyframes[1].cpu(),
    )


def with_keyframes(
    pipe: SkyReelsV4Pipeline, request: GenerationRequest, prepared: PreparedGeneration
) -> tuple[PreparedGeneration, KeyframeLayout]:
    """The base pass with ``request.keyframes`` generated jointly at the ``refine_to`` size: the noise,
    I (the high-res black latent), M (0) and ε₀ of the keyframes packed after the clip's
    (``skyreels_v4.model.keyframes``); keyframe noise from seed + 2 (the refiner uses seed + 1)."""
    vae = pipe.video_vae
    _, channels, frames, height, width = prepared.video_noise.shape
    target = request.refine_to
    if prepared.condition.video_reference is not None:
        raise SkyReelsError(
            "keyframes: joint keyframes do not combine with video references (@image_N / @video_N) yet"
        )
    if not all(0 <= i < frames for i in request.keyframes):
        raise SkyReelsError(
            f"keyframes: expected latent frames in [0, {frames}) (the base clip has {frames} latent "
            f"frames), got {request.keyframes!r}"
        )
    layout = KeyframeLayout(
        frame_indices=tuple(request.keyframes),
        height=target[0] // vae.spatial_factor,
        width=target[1] // vae.spatial_factor,
        base_frames=frames,
        base_height=height,
        base_width=width,
    )
    device, dtype = prepared.video_noise.device, prepared.video_noise.dtype
    with torch.no_grad():
        black = vae.encode(torch.full((1, 3, 1, *target), -1.0, device=pipe.device)).float()
    shape = (1, channels, layout.count, layout.height, layout.width)
    black = black.to(device=device, dtype=dtype).expand(shape)
    generator = torch.Generator().manual_seed((request.seed + 2) % 2**63)
    noise = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    zeros = torch.zeros(1, 1, *shape[2:], device=device, dtype=dtype)

    def packed(c: ModelCondition) -> ModelCondition:
        n = c.conditional_latents.shape[0]
        return replace(
            c,
            conditional_latents=pack_keyframes(c.conditional_latents, black.expand(n, *shape[1:]), layout),
            latent_mask=pack_keyframes(c.latent_mask, zeros.expand(n, *zeros.shape[1:]), layout, fill=1.0),
            condition_noise=pack_keyframes(c.condition_noise, noise.expand(n, *shape[1:]), layout),
            keyframes=layout,
        )

    prepared = replace(
        prepared,
        video_noise=pack_keyframes(prepared.video_noise, noise, layout),
        condition=packed(prepared.condition),
        negative=packed(prepared.negative),
    )
    return prepared, layout
