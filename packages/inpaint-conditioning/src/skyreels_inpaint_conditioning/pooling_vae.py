"""A transparent, deterministic causal "VAE" for examples, docs and tests (not a learned model).

Shape legend: B batch, F pixel frames, H, W pixel size, C latent channels, T latent frames, h, w.

It follows the :class:`~skyreels_inpaint_conditioning.vae.VideoVae` protocol with the Wan factors by
default: each latent cell is the mean of the pixels it covers (latent 0 <- frame 0, latent i <- frames
``4i-3 .. 4i``; 8x8 spatial cells), mapped from RGB to ``C`` channels by a fixed affine map drawn from
a seeded generator. Because every latent cell only sees its own pixels, results are easy to predict
by hand, which is what examples and tests need; a real VAE (tests use diffusers' AutoencoderKLWan)
mixes neighbours.
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import Tensor

from skyreels_inpaint_conditioning.errors import ConditioningShapeError
from skyreels_inpaint_conditioning.latent_mask import latent_grid_size

__all__ = ["PoolingVideoVae"]


class PoolingVideoVae:
    """Causal average-pool encoder with a fixed RGB -> ``C`` affine map.

    Args:
        latent_channels: ``C``.
        temporal_factor: frames per latent frame after the first.
        spatial_factor: pixels per latent cell along height and width.
        seed: seed of the affine map (weights ``[C, 3]``, bias ``[C]``, standard normal).
    """

    def __init__(
        self, *, latent_channels: int = 4, temporal_factor: int = 4, spatial_factor: int = 8, seed: int = 0
    ) -> None:
        self.latent_channels = latent_channels
        self.temporal_factor = temporal_factor
        self.spatial_factor = spatial_factor
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(latent_channels, 3, generator=gen)
        self.bias = torch.randn(latent_channels, generator=gen)
        self.num_encode_calls = 0  # lets tests see that the black latent is cached

    def encode(self, pixels: Tensor) -> Tensor:
        """``[B, 3, F, H, W]`` in [-1, 1] -> ``[B, C, T, h, w]`` (same dtype and device as ``pixels``)."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ConditioningShapeError(f"pixels: expected shape [B, 3, F, H, W], got {tuple(pixels.shape)}")
        _, _, f, h, w = pixels.shape
        latent_grid_size(f, h, w, temporal_factor=self.temporal_factor, spatial_factor=self.spatial_factor)
        self.num_encode_calls += 1
        s, k = self.spatial_factor, self.temporal_factor
        x = pixels.float()
        first = reduce(x[:, :, :1], "b c t (h p) (w q) -> b c t h w", "mean", p=s, q=s)
        rest = reduce(x[:, :, 1:], "b c (t k) (h p) (w q) -> b c t h w", "mean", k=k, p=s, q=s)
        pooled = torch.cat([first, rest], dim=2)
        weight = self.weight.to(pooled.device)
        bias = self.bias.to(pooled.device)
        latents = torch.einsum("oc,bcthw->bothw", weight, pooled) + rearrange(bias, "o -> 1 o 1 1 1")
        return latents.to(pixels.dtype)
