"""A zero-training video codec: causal temporal grouping and pixel-unshuffle into channels.

The stand-in for the paper's video VAE (section 3.1) where no trained codec is at hand. Shape legend:
B batch, F = 1 + tf * (T - 1) pixel frames, H, W pixels, T latent frames, h = H / sf, w = W / sf.

Encode: frame 0 is repeated ``tf`` times to fill its own group (so latent 0 depends on frame 0 only,
the causal first-frame rule of Wan/HunyuanVideo VAEs), frames ``1 + tf * (i - 1) .. tf * i`` form group
``i``; each group's ``3 x tf x sf x sf`` pixel block becomes the channels of one latent cell, in the
order (colour, frame in group, row in cell, column in cell). Latents are ``pixels / latent_scale``
(the fixed normalisation; the default 0.5 is a power of two, so the transform is exact in floating
point). Decode is the inverse; for group 0 it returns the mean of its ``tf`` slots, which is frame 0
exactly for encoded input and the least-squares frame for any other latent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from skyreels_v4.io import atomic_write_json
from skyreels_v4.vae.tiling import VideoTilingConfig
from skyreels_v4.vae.video_codec import FORMAT_VERSION, VideoCodec, require_fields, tiling_from_config

__all__ = ["PixelShuffleVideoCodec"]


class PixelShuffleVideoCodec(VideoCodec):
    """Exactly invertible codec with ``latent_channels = 3 * temporal_factor * spatial_factor ** 2``."""

    class_name = "PixelShuffleVideoCodec"

    def __init__(
        self,
        *,
        temporal_factor: int = 4,
        spatial_factor: int = 4,
        latent_scale: float = 0.5,
        tiling: VideoTilingConfig | None = None,
    ) -> None:
        super().__init__(tiling=tiling)
        for name, value in (("temporal_factor", temporal_factor), ("spatial_factor", spatial_factor)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if not isinstance(latent_scale, (int, float)) or not 0 < latent_scale < float("inf"):
            raise ValueError(f"latent_scale: expected a finite number > 0, got {latent_scale!r}")
        self.temporal_factor = temporal_factor
        self.spatial_factor = spatial_factor
        self.latent_channels = 3 * temporal_factor * spatial_factor**2
        self.latent_scale = float(latent_scale)

    def _encode_block(self, pixels: Tensor) -> Tensor:
        tf, sf = self.temporal_factor, self.spatial_factor
        first = pixels[:, :, :1].expand(-1, -1, tf, -1, -1)
        grouped = torch.cat([first, pixels[:, :, 1:]], dim=2)
        latents = rearrange(grouped, "b c (t g) (h p) (w q) -> b (c g p q) t h w", g=tf, p=sf, q=sf)
        return latents / self.latent_scale

    def _decode_block(self, latents: Tensor) -> Tensor:
        tf, sf = self.temporal_factor, self.spatial_factor
        grouped = rearrange(
            latents * self.latent_scale, "b (c g p q) t h w -> b c (t g) (h p) (w q)", g=tf, p=sf, q=sf
        )
        first = grouped[:, :, :tf].mean(dim=2, keepdim=True)
        return torch.cat([first, grouped[:, :, tf:]], dim=2)

    def _write_folder(self, folder: Path) -> None:
        atomic_write_json(folder / "config.json", self.to_config())

    def to_config(self) -> dict[str, Any]:
        """The config.json content."""
        return {
            "class": self.class_name,
            "format_version": FORMAT_VERSION,
            "temporal_factor": self.temporal_factor,
            "spatial_factor": self.spatial_factor,
            "latent_scale": self.latent_scale,
            "tiling": self.tiling.to_dict(),
        }

    @classmethod
    def _read_folder(cls, folder: Path, config: dict[str, Any]) -> PixelShuffleVideoCodec:
        fields = require_fields(folder, config, ("temporal_factor", "spatial_factor", "latent_scale"))
        return cls(**fields, tiling=tiling_from_config(folder, config))
