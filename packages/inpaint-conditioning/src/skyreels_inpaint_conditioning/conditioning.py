"""Build ``Concat(V, I, M)`` for any task (paper section 3.2, eq. 7).

Shape legend: B batch, F pixel frames, H, W pixel size, C latent channels, T latent frames, h, w
latent size.

- M ``[B, 1, T, h, w]``: the task's pixel keep mask reduced conservatively to the latent grid
  (:func:`~skyreels_inpaint_conditioning.latent_mask.reduce_pixel_mask_to_latent`).
- I ``[B, C, T, h, w]``: where M = 1, the VAE latent of the *conditional video* (the source video with
  every non-conditional pixel set to black, -1); where M = 0, the cached latent of one black frame.
  Encoding the masked video (not the full source) keeps generated content from leaking into kept
  latent cells through the VAE's receptive field, and is exactly what inference can build from the
  user's inputs. Decision and alternatives: docs/decisions/0005-inpaint-conditional-latents.md.
- Audio (paper 3.2, last paragraph): inpainting is applied to the video stream only; the audio branch
  generates its whole track. So there is no audio I or M, and the audio loss mask is all ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skyreels_inpaint_conditioning.errors import ConditioningShapeError, TaskParameterError
from skyreels_inpaint_conditioning.latent_mask import latent_grid_size, reduce_pixel_mask_to_latent
from skyreels_inpaint_conditioning.tasks import TaskSpec
from skyreels_inpaint_conditioning.vae import BlackLatentCache, VideoVae, black_image_latent, check_video_vae

__all__ = ["InpaintCondition", "build_inpaint_condition", "concat_inpaint_input", "video_from_keyframes"]


def concat_inpaint_input(noisy_latents: Tensor, conditional_latents: Tensor, latent_mask: Tensor) -> Tensor:
    """Eq. 7: ``Concat(V, I, M)`` along channels -> ``[B, 2C + 1, T, h, w]`` in ``V``'s dtype.

    Args:
        noisy_latents: V ``[B, C, T, h, w]``.
        conditional_latents: I ``[B, C, T, h, w]``.
        latent_mask: M ``[B, 1, T, h, w]`` (1 = condition).
    """
    v, i, m = noisy_latents, conditional_latents, latent_mask
    if v.ndim != 5:
        raise ConditioningShapeError(f"noisy_latents: expected shape [B, C, T, h, w], got {tuple(v.shape)}")
    if tuple(i.shape) != tuple(v.shape):
        raise ConditioningShapeError(
            f"conditional_latents: expected the noisy latents' shape {tuple(v.shape)}, got {tuple(i.shape)}"
        )
    expected_m = (v.shape[0], 1, *v.shape[2:])
    if tuple(m.shape) != expected_m:
        raise ConditioningShapeError(f"latent_mask: expected shape {expected_m}, got {tuple(m.shape)}")
    return torch.cat([v, i.to(v.dtype), m.to(v.dtype)], dim=1)


@dataclass(frozen=True, kw_only=True, eq=False)
class InpaintCondition:
    """Everything the video branch needs to condition one batch, built by :func:`build_inpaint_condition`.

    Attributes:
        tasks: the task of each sample (length B).
        pixel_mask: bool ``[B, 1, F, H, W]``, True = conditional pixel.
        conditional_pixels: ``[B, 3, F, H, W]``, the source video where conditional, black (-1) elsewhere.
        latent_mask: M, ``[B, 1, T, h, w]`` in the latents' dtype, 1 = condition.
        conditional_latents: I, ``[B, C, T, h, w]``.
        video_loss_mask: ``1 - M``: the flow-matching loss covers generated latent cells only.
        audio_loss_mask: ``[B, 1, L_audio]`` of ones when ``num_audio_latents`` was given (audio is
            generated from scratch in every inpainting task), else None.
    """

    tasks: tuple[TaskSpec, ...]
    pixel_mask: Tensor
    conditional_pixels: Tensor
    latent_mask: Tensor
    conditional_latents: Tensor
    video_loss_mask: Tensor
    audio_loss_mask: Tensor | None

    def concat(self, noisy_latents: Tensor) -> Tensor:
        """``Concat(V, I, M)`` -> ``[B, 2C + 1, T, h, w]`` (eq. 7); call once per denoising step."""
        return concat_inpaint_input(noisy_latents, self.conditional_latents, self.latent_mask)


def _resolve_tasks(task: TaskSpec | Sequence[TaskSpec], batch: int) -> tuple[TaskSpec, ...]:
    if isinstance(task, TaskSpec):
        return (task,) * batch
    tasks = tuple(task)
    if len(tasks) != batch:
        raise ConditioningShapeError(
            f"task: expected one TaskSpec or {batch} (one per sample), got {len(tasks)}"
        )
    for n, spec in enumerate(tasks):
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"task[{n}]: expected a TaskSpec, got {type(spec).__name__}")
    return tasks


def build_inpaint_condition(
    task: TaskSpec | Sequence[TaskSpec],
    *,
    vae: VideoVae,
    source_video: Tensor | None = None,
    video_shape: tuple[int, int, int, int] | None = None,
    num_audio_latents: int | None = None,
    black_latents: BlackLatentCache | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> InpaintCondition:
    """Build I, M and the loss masks of eq. 7 for a batch.

    Args:
        task: one spec for the whole batch, or one per sample.
        vae: the video VAE (causal; its factors define the latent grid).
        source_video: ``[B, 3, F, H, W]`` in [-1, 1]; only its conditional pixels are used. Required
            unless no sample keeps any pixel (e.g. text-to-video), in which case pass ``video_shape``.
        video_shape: ``(B, F, H, W)`` when there is no source video.
        num_audio_latents: length of the audio latent sequence, to emit the all-ones audio loss mask.
        black_latents: cache of black-frame latents (default: the process-wide cache).
        dtype, device: of the outputs when there is no source video (default float32 on CPU); with a
            source video they follow it and must stay None.

    Raises:
        ConditioningShapeError: shapes do not fit each other or the VAE factors.
        TaskParameterError: a task leaves nothing to generate on the latent grid, or needs a source
            video that was not given.
    """
    check_video_vae(vae)
    if (source_video is None) == (video_shape is None):
        raise TypeError("source_video, video_shape: expected exactly one of them")
    if source_video is not None:
        if not isinstance(source_video, Tensor) or source_video.ndim != 5 or source_video.shape[1] != 3:
            shape = (
                tuple(source_video.shape) if isinstance(source_video, Tensor) else type(source_video).__name__
            )
            raise ConditioningShapeError(f"source_video: expected shape [B, 3, F, H, W], got {shape}")
        if not source_video.is_floating_point():
            raise TypeError(
                f"source_video: expected a floating tensor in [-1, 1], got dtype {source_video.dtype}"
            )
        lo, hi = float(source_video.min()), float(source_video.max())
        if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(
                f"source_video: expected pixel values in [-1, 1], got range [{lo:.3g}, {hi:.3g}]"
            )
        if dtype is not None or device is not None:
            raise TypeError("dtype, device: follow source_video; pass them only with video_shape")
        batch, _, frames, height, width = source_video.shape
        dtype, device = source_video.dtype, source_video.device
    else:
        if len(video_shape) != 4:
            raise ConditioningShapeError(f"video_shape: expected (B, F, H, W), got {video_shape!r}")
        batch, frames, height, width = (int(x) for x in video_shape)
        dtype = torch.float32 if dtype is None else dtype
        device = torch.device("cpu") if device is None else torch.device(device)
    tf, sf = vae.temporal_factor, vae.spatial_factor
    t, h, w = latent_grid_size(frames, height, width, temporal_factor=tf, spatial_factor=sf)
    tasks = _resolve_tasks(task, batch)

    # 1. Pixel keep masks, one per sample; union semantics live inside CombinedTask.
    pixel_mask = torch.stack(
        [
            spec.pixel_keep_mask(
                num_frames=frames, height=height, width=width, temporal_factor=tf, device=device
            )
            for spec in tasks
        ]
    )[:, None]
    # 2. M on the latent grid (conservative: a cell is a condition only if all its pixels are).
    latent_keep = reduce_pixel_mask_to_latent(pixel_mask, temporal_factor=tf, spatial_factor=sf)
    for n, spec in enumerate(tasks):
        if bool(latent_keep[n].all()):
            raise TaskParameterError(
                f"task[{n}] ({spec.label}): every latent cell is a condition, nothing is left to generate"
            )
    needs_pixels = pixel_mask.flatten(1).any(dim=1)
    if source_video is None and bool(needs_pixels.any()):
        n = int(needs_pixels.nonzero()[0])
        raise TaskParameterError(
            f"source_video: task[{n}] ({tasks[n].label}) keeps pixels, so a source video is needed"
        )

    # 3. Conditional pixels: the source where kept, black (-1) elsewhere (paper: black frames).
    black_pixels = torch.full((batch, 3, frames, height, width), -1.0, dtype=dtype, device=device)
    conditional_pixels = (
        black_pixels if source_video is None else torch.where(pixel_mask, source_video, black_pixels)
    )

    # 4. I: encoder output of the conditional video where M = 1, the black image latent elsewhere.
    black = black_image_latent(
        vae, height=height, width=width, dtype=dtype, device=device, cache=black_latents
    )
    conditional_latents = black.expand(batch, -1, t, -1, -1).clone()
    encode_rows = latent_keep.flatten(1).any(dim=1).nonzero().flatten()
    if encode_rows.numel() > 0:
        with torch.no_grad():
            encoded = vae.encode(conditional_pixels[encode_rows])
        expected = (encode_rows.numel(), vae.latent_channels, t, h, w)
        if tuple(encoded.shape) != expected:
            raise ConditioningShapeError(
                f"vae.encode: expected latents of shape {expected}, got {tuple(encoded.shape)}"
            )
        conditional_latents[encode_rows] = torch.where(
            latent_keep[encode_rows], encoded.to(conditional_latents.dtype), conditional_latents[encode_rows]
        )
    latent_mask = latent_keep.to(conditional_latents.dtype)

    audio_loss_mask = None
    if num_audio_latents is not None:
        if (
            isinstance(num_audio_latents, bool)
            or not isinstance(num_audio_latents, int)
            or num_audio_latents < 1
        ):
            raise ValueError(f"num_audio_latents: expected a positive int, got {num_audio_latents!r}")
        audio_loss_mask = torch.ones(batch, 1, num_audio_latents, dtype=latent_mask.dtype, device=device)
    return InpaintCondition(
        tasks=tasks,
        pixel_mask=pixel_mask,
        conditional_pixels=conditional_pixels,
        latent_mask=latent_mask,
        conditional_latents=conditional_latents,
        video_loss_mask=1.0 - latent_mask,
        audio_loss_mask=audio_loss_mask,
    )


def video_from_keyframes(keyframes: Mapping[int, Tensor], *, num_frames: int) -> Tensor:
    """Place images at frame indices of an otherwise black clip: ``{f: [B, 3, H, W]}`` -> ``[B, 3, F, H, W]``.

    For inference: image-to-video is ``{0: image}``; interpolation with only an end image repeats it
    over the last four frames, e.g. ``{0: start, **{F - 4 + j: end for j in range(4)}}``.
    """
    if not keyframes:
        raise ValueError("keyframes: expected at least one {frame_index: image} entry, got none")
    first = next(iter(keyframes.values()))
    if not isinstance(first, Tensor) or first.ndim != 4 or first.shape[1] != 3:
        raise ConditioningShapeError(
            f"keyframes: expected images of shape [B, 3, H, W], got {getattr(first, 'shape', first)}"
        )
    b, _, height, width = first.shape
    video = torch.full((b, 3, num_frames, height, width), -1.0, dtype=first.dtype, device=first.device)
    for index, image in keyframes.items():
        if not 0 <= index < num_frames:
            raise ConditioningShapeError(f"keyframes: frame index {index} is outside 0..{num_frames - 1}")
        if tuple(image.shape) != tuple(first.shape):
            raise ConditioningShapeError(
                f"keyframes[{index}]: expected shape {tuple(first.shape)} like the other images, "
                f"got {tuple(image.shape)}"
            )
        video[:, :, index] = image
    return video
