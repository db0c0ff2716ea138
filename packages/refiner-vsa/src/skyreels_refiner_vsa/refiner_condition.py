"""The refiner's conditioning: base-model outputs -> channels concatenated with the noisy high-res latents.

Paper section 4.5: "we first linearly interpolate the low-resolution latents to the target high
resolution. Then, for keyframe positions, we replace the interpolated results with the directly
predicted high-resolution keyframe latents ... For inpainting tasks, we incorporate the
high-resolution version of the source video, using it to replace the interpolated regions where
inpainting is not required. A spatial mask guides the model ..."

We build, on the high-res latent grid ``[B, C, T, h, w]``:

- ``U`` (upsampled): the low-res latents interpolated in space and time (frame interpolation, e.g.
  16 -> 32 fps), keyframe latents put in their frames, the source put back where it is kept;
- ``I, M`` exactly as eq. 7 (skyreels-inpaint-conditioning): ``M = 1`` on exact high-res
  conditions (keyframe frames, kept source cells), ``I`` = those latents there and the black-frame
  latent elsewhere;

and the refiner reads ``Concat(V, I, M, U)``: the base model's eq. 7 channels first (their
pretrained patch-embedding weights apply unchanged) and the new ``U`` channels last (zero-initialised,
see ``refiner.py``). Decision: docs/decisions/0010-vsa-tiling-and-text.md.

Time interpolation maps high-res latent frame ``j`` to low-res time ``j·(T_lo-1)/(T_hi-1)`` (first and
last frames aligned). For a causal 4x VAE at 16 fps -> 32 fps, ``T_hi = 2·T_lo - 1`` and frame ``j``
reads low-res time ``j/2``. Space uses pixel-centre (``align_corners=False``) bilinear sampling.

Shape legend: B batch, C latent channels, T/h/w high-res latent grid, T_lo/h_lo/w_lo low-res grid.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skyreels_inpaint_conditioning import concat_inpaint_input

__all__ = [
    "RefinerCondition",
    "UpsampleMode",
    "build_refiner_condition",
    "interpolated_num_frames",
    "upsample_latents",
]


class UpsampleMode(enum.Enum):
    """LINEAR: linear in time (end frames aligned) and bilinear in space; NEAREST: nearest sample."""

    LINEAR = "linear"
    NEAREST = "nearest"


def interpolated_num_frames(num_latent_frames: int, factor: int) -> int:
    """Latent frames after ``factor``x frame interpolation of a causal-VAE clip: ``factor·(T-1) + 1``.

    With ``T = 1 + (F-1)/4`` latents for ``F`` frames, ``factor``x the frame rate over the same
    duration gives ``F' = factor·(F-1) + 1`` frames, i.e. ``factor·(T-1) + 1`` latents (21 -> 41 at 2x).
    """
    for name, value in (("num_latent_frames", num_latent_frames), ("factor", factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return factor * (num_latent_frames - 1) + 1


def _check_latents(name: str, x: object, channels: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 5 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor [B, C, T, h, w], got {got}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have C = {channels} channels like low_res_latents, got {x.shape[1]}")
    return x


def upsample_latents(
    latents: Tensor, size: tuple[int, int, int], *, mode: UpsampleMode = UpsampleMode.LINEAR
) -> Tensor:
    """``[B, C, T_lo, h_lo, w_lo] -> [B, C, T, h, w]``: time as in the module docstring, then space."""
    latents = _check_latents("latents", latents)
    if not isinstance(mode, UpsampleMode):
        raise TypeError(f"mode must be an UpsampleMode, got {mode!r}")
    if len(size) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"size must be three positive ints (T, h, w), got {size!r}")
    frames, height, width = size
    t_lo = latents.shape[2]
    # 1. Time: frame j reads low-res time j·(T_lo-1)/(T-1) (first and last frames aligned).
    where = torch.arange(frames, dtype=torch.float64) * ((t_lo - 1) / max(frames - 1, 1))
    if mode is UpsampleMode.NEAREST:
        x = latents[:, :, torch.floor(where + 0.5).long().clamp(max=t_lo - 1).to(latents.device)]
    else:
        lo = where.floor().long().clamp(max=t_lo - 1)
        hi = (lo + 1).clamp(max=t_lo - 1)
        frac = (where - lo).to(latents.dtype).to(latents.device).view(1, 1, -1, 1, 1)
        x = latents[:, :, lo.to(latents.device)] * (1 - frac) + latents[:, :, hi.to(latents.device)] * frac
    # 2. Space, frame by frame: pixel-centre bilinear, or nearest.
    flat = x.transpose(1, 2).flatten(0, 1)  # [B·T, C, h_lo, w_lo]
    if mode is UpsampleMode.NEAREST:
        flat = torch.nn.functional.interpolate(flat, size=(height, width), mode="nearest-exact")
    else:
        flat = torch.nn.functional.interpolate(
            flat, size=(height, width), mode="bilinear", align_corners=False
        )
    return flat.unflatten(0, (latents.shape[0], frames)).transpose(1, 2).contiguous()


@dataclass(frozen=True, kw_only=True, eq=False)
class RefinerCondition:
    """The refiner's conditioning channels on the high-res latent grid.

    Attributes:
        upsampled: U ``[B, C, T, h, w]``: interpolated low-res latents, keyframes and kept source in place.
        conditional_latents: I ``[B, C, T, h, w]`` (eq. 7): exact conditions where M = 1, black latent
            elsewhere.
        latent_mask: M ``[B, 1, T, h, w]``, 1 = exact high-res condition (keyframe or kept source).
    """

    upsampled: Tensor
    conditional_latents: Tensor
    latent_mask: Tensor

    @property
    def loss_mask(self) -> Tensor:
        """``1 - M``: the flow-matching loss covers the cells the refiner generates."""
        return 1 - self.latent_mask

    def concat(self, noisy_latents: Tensor) -> Tensor:
        """``Concat(V, I, M, U)`` -> ``[B, 3C + 1, T, h, w]``: eq. 7's channels, then U."""
        vim = concat_inpaint_input(noisy_latents, self.conditional_latents, self.latent_mask)
        return torch.cat([vim, self.upsampled.to(vim.dtype)], dim=1)


def build_refiner_condition(
    low_res_latents: Tensor,
    *,
    size: tuple[int, int, int],
    black_latent: Tensor,
    keyframe_latents: Tensor | None = None,
    keyframe_indices: Sequence[int] = (),
    source_latents: Tensor | None = None,
    keep_mask: Tensor | None = None,
    mode: UpsampleMode = UpsampleMode.LINEAR,
) -> RefinerCondition:
    """Build U, I and M from the base model's outputs (and, for inpainting, the high-res source).

    Args:
        low_res_latents: ``[B, C, T_lo, h_lo, w_lo]``, the base model's low-res prediction of every frame.
        size: the high-res latent grid ``(T, h, w)`` (``interpolated_num_frames`` for the time axis).
        black_latent: the latent of a black frame, broadcastable to ``[B, C, 1, h, w]`` (e.g. ``[C]``
            reshaped to ``[1, C, 1, 1, 1]``); fills I where M = 0, as eq. 7.
        keyframe_latents: ``[B, C, K, h, w]`` high-res keyframes predicted by the base model, or None.
        keyframe_indices: the K distinct high-res latent frames they replace.
        source_latents: ``[B, C, T, h, w]`` high-res source video (inpainting tasks).
        keep_mask: ``[B, 1, T, h, w]`` binary, 1 = keep the source there; given iff ``source_latents`` is.
        mode: interpolation of the low-res latents.
    """
    low = _check_latents("low_res_latents", low_res_latents)
    batch, channels = low.shape[:2]
    upsampled = upsample_latents(low, tuple(size), mode=mode)
    frames, height, width = upsampled.shape[2:]
    shape, mask_shape = (batch, channels, frames, height, width), (batch, 1, frames, height, width)
    mask = torch.zeros(mask_shape, dtype=low.dtype, device=low.device)
    exact = torch.zeros(shape, dtype=low.dtype, device=low.device)

    # 1. Keyframes replace the interpolated frames at their positions.
    indices = list(keyframe_indices)
    if keyframe_latents is not None or indices:
        if keyframe_latents is None:
            raise ValueError(f"keyframe_indices {indices} were given without keyframe_latents")
        keyframes = _check_latents("keyframe_latents", keyframe_latents, channels)
        expected = (batch, channels, len(indices), height, width)
        if tuple(keyframes.shape) != expected:
            raise ValueError(
                f"keyframe_latents must be [B, C, K = len(keyframe_indices), h, w] = {expected}, "
                f"got {tuple(keyframes.shape)}"
            )
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < frames for i in indices) or len(
            set(indices)
        ) != len(indices):
            raise ValueError(f"keyframe_indices must be distinct ints in [0, {frames}), got {indices}")
        upsampled[:, :, indices] = keyframes.to(upsampled.dtype)
        exact[:, :, indices] = keyframes.to(exact.dtype)
        mask[:, :, indices] = 1

    # 2. Inpainting: the high-res source replaces U (and is an exact condition) where it is kept.
    if (source_latents is None) != (keep_mask is None):
        raise ValueError("source_latents and keep_mask must be given together (inpainting) or not at all")
    if source_latents is not None:
        source = _check_latents("source_latents", source_latents, channels)
        if tuple(source.shape) != shape:
            raise ValueError(f"source_latents must be [B, C, T, h, w] = {shape}, got {tuple(source.shape)}")
        if not isinstance(keep_mask, Tensor) or tuple(keep_mask.shape) != mask_shape:
            got = tuple(keep_mask.shape) if isinstance(keep_mask, Tensor) else type(keep_mask).__name__
            raise ValueError(f"keep_mask must be [B, 1, T, h, w] = {mask_shape}, got {got}")
        if not bool(((keep_mask == 0) | (keep_mask == 1)).all()):
            raise ValueError("keep_mask must be binary (1 = keep the source, 0 = generate)")
        keep = keep_mask.to(low.dtype)
        upsampled = torch.where(keep > 0, source.to(upsampled.dtype), upsampled)
        exact = torch.where(keep > 0, source.to(exact.dtype), exact)
        mask = torch.maximum(mask, keep)

    if not isinstance(black_latent, Tensor):
        raise TypeError(
            "black_latent must be a tensor broadcastable to [B, C, 1, h, w], "
            f"got {type(black_latent).__name__}"
        )
    try:
        black = torch.broadcast_to(
            black_latent.to(low.dtype).to(low.device), (batch, channels, 1, height, width)
        )
    except RuntimeError as error:
        raise ValueError(
            f"black_latent must broadcast to [B, C, 1, h, w] = {(batch, channels, 1, height, width)}, "
            f"got {tuple(black_latent.shape)}"
        ) from error
    conditional = torch.where(mask > 0, exact, black)
    return RefinerCondition(upsampled=upsampled, conditional_latents=conditional, latent_mask=mask)
