"""Plain fp32 loop implementations used as test oracles (STYLE.md: the reference lives in the library).

They follow the documented rules cell by cell, with no reshaping tricks, so a disagreement with the
vectorised code points at the vectorised code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skyreels_inpaint_conditioning.latent_mask import latent_frame_span, latent_grid_size

__all__ = ["reduce_pixel_mask_to_latent_loop"]


def reduce_pixel_mask_to_latent_loop(
    pixel_mask: Tensor, *, temporal_factor: int = 4, spatial_factor: int = 8
) -> Tensor:
    """Loop version of :func:`reduce_pixel_mask_to_latent`.

    ``[B, 1, F, H, W]`` -> float32 ``[B, 1, T, h, w]``.
    """
    b, _, f, height, width = pixel_mask.shape
    t, h, w = latent_grid_size(
        f, height, width, temporal_factor=temporal_factor, spatial_factor=spatial_factor
    )
    mask = pixel_mask.to(torch.float32)
    out = torch.zeros(b, 1, t, h, w, dtype=torch.float32)
    s = spatial_factor
    for n in range(b):
        for i in range(t):
            frames = list(latent_frame_span(i, temporal_factor=temporal_factor))
            for y in range(h):
                for x in range(w):
                    cell = mask[n, 0, frames, y * s : (y + 1) * s, x * s : (x + 1) * s]
                    out[n, 0, i, y, x] = 1.0 if bool((cell == 1).all()) else 0.0
    return out
