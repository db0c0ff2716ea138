"""Pixel grid -> latent grid: frame counts, pixel spans of latent cells, and THE mask reduction.

Shape legend: B batch, F pixel frames, H, W pixel height/width, T latent frames, h, w latent
height/width.

The Wan-style video VAE (FACTS.md) is causal in time with factor 4 and downsamples space by 8x8:
latent frame 0 encodes pixel frame 0 alone, and latent frame i >= 1 encodes the group of pixel
frames ``4i-3 .. 4i``; hence ``T = 1 + (F-1)/4``. Latent cell ``(i, y, x)`` therefore "covers" the
pixels ``frames(i) x [8y, 8y+8) x [8x, 8x+8)``. Every function here takes the factors as arguments
(defaults 4 and 8) so a VAE with other factors fits the same rule.

Reduction rule (paper eq. 7, M lives on the latent grid; ARCHITECTURE.md section 3): a latent cell
is a condition (1) only if EVERY pixel it covers is a condition. This is the conservative choice: a
latent cell mixes all its pixels, so marking it "condition" while part of it must be generated would
hand the model content it is asked to produce (or, at inference, freeze pixels the user wants
changed). Cells that are only partly conditioned are generated whole.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from skyreels_inpaint_conditioning.errors import ConditioningShapeError, MaskValueError

__all__ = [
    "check_binary_mask",
    "latent_frame_span",
    "latent_grid_size",
    "latent_num_frames",
    "reduce_pixel_mask_to_latent",
]


def _check_factor(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConditioningShapeError(f"{name}: expected a positive int, got {value!r}")


def latent_num_frames(num_frames: int, *, temporal_factor: int = 4) -> int:
    """Number of latent frames ``T = 1 + (F-1)/temporal_factor`` of a causal VAE.

    Raises:
        ConditioningShapeError: if ``F`` is not ``1 + temporal_factor * k`` for some ``k >= 0``.
    """
    _check_factor("temporal_factor", temporal_factor)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ConditioningShapeError(f"num_frames: expected a positive int, got {num_frames!r}")
    if (num_frames - 1) % temporal_factor != 0:
        lower = num_frames - (num_frames - 1) % temporal_factor
        raise ConditioningShapeError(
            f"num_frames: a causal VAE with temporal factor {temporal_factor} needs F = 1 + "
            f"{temporal_factor}k frames (latent 0 <- frame 0, latent i <- the next {temporal_factor}), "
            f"got F={num_frames}; the nearest valid counts are {lower} and {lower + temporal_factor}"
        )
    return 1 + (num_frames - 1) // temporal_factor


def latent_frame_span(latent_index: int, *, temporal_factor: int = 4) -> range:
    """Pixel frames encoded by latent frame ``latent_index``: ``[0]`` for 0, ``4i-3 .. 4i`` after."""
    _check_factor("temporal_factor", temporal_factor)
    if isinstance(latent_index, bool) or not isinstance(latent_index, int) or latent_index < 0:
        raise ConditioningShapeError(f"latent_index: expected an int >= 0, got {latent_index!r}")
    if latent_index == 0:
        return range(0, 1)
    stop = 1 + temporal_factor * latent_index
    return range(stop - temporal_factor, stop)


def latent_grid_size(
    num_frames: int, height: int, width: int, *, temporal_factor: int = 4, spatial_factor: int = 8
) -> tuple[int, int, int]:
    """Latent grid ``(T, h, w)`` of a pixel video ``(F, H, W)``; validates every divisibility."""
    _check_factor("spatial_factor", spatial_factor)
    t = latent_num_frames(num_frames, temporal_factor=temporal_factor)
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % spatial_factor:
            raise ConditioningShapeError(
                f"{name}: expected a positive multiple of the VAE's spatial factor {spatial_factor}, "
                f"got {size!r}"
            )
    return t, height // spatial_factor, width // spatial_factor


def check_binary_mask(name: str, mask: Tensor) -> Tensor:
    """Return ``mask`` as a bool tensor after checking it holds only 0 and 1.

    Accepts bool, integer or floating tensors. Raises ``MaskValueError`` naming ``name`` otherwise.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise MaskValueError(
            f"{name}: expected a bool, integer or real floating mask, got dtype {mask.dtype}"
        )
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        bad = mask[~binary].flatten()[:3].tolist()
        raise MaskValueError(f"{name}: expected a binary mask (values 0 and 1 only), found e.g. {bad}")
    return mask == 1


def reduce_pixel_mask_to_latent(
    pixel_mask: Tensor, *, temporal_factor: int = 4, spatial_factor: int = 8
) -> Tensor:
    """Reduce a pixel-level condition mask to the latent grid, conservatively.

    Rule: latent 0 <- pixel frame 0; latent i >= 1 <- pixel frames ``4i-3 .. 4i`` (causal groups);
    spatially, latent cell ``(y, x)`` <- the ``8x8`` pixel block at ``(8y, 8x)``. The latent cell is 1
    (condition) iff every pixel it covers is 1; otherwise 0 (generate).

    Args:
        pixel_mask: ``[B, 1, F, H, W]``, binary (bool, or integer/float 0/1), 1 = condition.
        temporal_factor: pixel frames per latent frame after the first (Wan VAE: 4).
        spatial_factor: pixels per latent cell along height and width (Wan VAE: 8).

    Returns:
        ``[B, 1, T, h, w]`` with ``T = 1 + (F-1)/temporal_factor``, ``h = H/spatial_factor``,
        ``w = W/spatial_factor``; same dtype as ``pixel_mask``.

    Raises:
        ConditioningShapeError: wrong rank, channel count, ``F != 1 + temporal_factor*k`` or ``H, W``
            not divisible by ``spatial_factor``.
        MaskValueError: values other than 0 and 1.
    """
    if not isinstance(pixel_mask, Tensor):
        raise TypeError(f"pixel_mask: expected a torch.Tensor, got {type(pixel_mask).__name__}")
    if pixel_mask.ndim != 5 or pixel_mask.shape[1] != 1:
        raise ConditioningShapeError(
            f"pixel_mask: expected shape [B, 1, F, H, W], got {tuple(pixel_mask.shape)}"
        )
    _, _, f, h, w = pixel_mask.shape
    latent_grid_size(f, h, w, temporal_factor=temporal_factor, spatial_factor=spatial_factor)
    keep = check_binary_mask("pixel_mask", pixel_mask)
    s = spatial_factor
    # Latent frame 0 sees pixel frame 0 alone (causal first frame).
    first = rearrange(keep[:, :, :1], "b c t (h p) (w q) -> b c t h w (p q)", p=s, q=s).all(dim=-1)
    # Every later latent frame sees the next `temporal_factor` pixel frames.
    rest = rearrange(
        keep[:, :, 1:], "b c (t k) (h p) (w q) -> b c t h w (k p q)", k=temporal_factor, p=s, q=s
    ).all(dim=-1)
    latent = torch.cat([first, rest], dim=2)
    return latent if pixel_mask.dtype == torch.bool else latent.to(pixel_mask.dtype)
