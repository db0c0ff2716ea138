"""The embedded default video codec: a small causal convolutional autoencoder (stands in for the
pretrained video VAE of paper section 3.1 on machines without one).

Shape legend: B batch, F = 1 + tf * (T - 1) pixel frames, H, W pixels, G = B * T frame groups,
C latent channels, h = H / sf, w = W / sf.

Causality is built in: frames are grouped like Wan's causal VAE (frame 0 alone, repeated to fill its
group, then groups of ``tf`` frames) and every group is encoded on its own by a 2D network that sees the
group's ``3 * tf`` colour-frames as input channels. So latent ``i`` depends on frames ``<= tf * i`` only,
and latent 0 on frame 0 only (exactly: it is the same whether frame 0 is encoded alone or in a clip).
The decoder maps each latent cell back to its group's frames; for group 0 it returns the mean of the
``tf`` slots. Per-channel latent mean/std (buffers, saved with the weights) normalise the latents the
diffusion model sees: ``(z - mean) / std``.

Network per group: pixel-unshuffle by 2, 3x3 conv to ``hidden_channels``, residual blocks, stride-2
3x3 convs down to ``sf``, a 3x3 conv to ``C``; the decoder mirrors it with conv + pixel-shuffle
upsampling. Deterministic (a plain autoencoder: the posterior is a point).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from skyreels_v4.errors import FileFormatError
from skyreels_v4.io import atomic_write_json, read_safetensors, save_safetensors
from skyreels_v4.vae.tiling import VideoTilingConfig
from skyreels_v4.vae.video_codec import FORMAT_VERSION, VideoCodec, require_fields, tiling_from_config

__all__ = ["TinyVideoAutoencoder", "TinyVideoAutoencoderConfig"]

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True, kw_only=True)
class TinyVideoAutoencoderConfig:
    """Shape of :class:`TinyVideoAutoencoder`.

    Attributes:
        temporal_factor: frames per latent frame after the first (causal groups).
        spatial_factor: pixels per latent cell along H and W; a power of two >= 2 (4 or 8 in practice).
        latent_channels: C.
        hidden_channels: width of the per-group network.
        num_res_blocks: residual blocks at each end of the encoder and decoder.
    """

    temporal_factor: int = 4
    spatial_factor: int = 4
    latent_channels: int = 8
    hidden_channels: int = 64
    num_res_blocks: int = 2

    def __post_init__(self) -> None:
        for name in ("temporal_factor", "latent_channels", "hidden_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TinyVideoAutoencoderConfig.{name}: expected an int >= 1, got {value!r}")
        sf = self.spatial_factor
        if isinstance(sf, bool) or not isinstance(sf, int) or sf < 2 or sf & (sf - 1):
            raise ValueError(
                f"TinyVideoAutoencoderConfig.spatial_factor: expected a power of two >= 2, got {sf!r}"
            )
        nrb = self.num_res_blocks
        if isinstance(nrb, bool) or not isinstance(nrb, int) or nrb < 0:
            raise ValueError(f"TinyVideoAutoencoderConfig.num_res_blocks: expected an int >= 0, got {nrb!r}")


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class TinyVideoAutoencoder(VideoCodec):
    """Small causal autoencoder (module docstring); ``encode``/``decode`` as :class:`VideoCodec`."""

    class_name = "TinyVideoAutoencoder"

    def __init__(
        self, config: TinyVideoAutoencoderConfig | None = None, *, tiling: VideoTilingConfig | None = None
    ) -> None:
        super().__init__(tiling=tiling)
        config = config or TinyVideoAutoencoderConfig()
        if not isinstance(config, TinyVideoAutoencoderConfig):
            raise TypeError(f"config: expected a TinyVideoAutoencoderConfig, got {type(config).__name__}")
        self.config = config
        self.temporal_factor = config.temporal_factor
        self.spatial_factor = config.spatial_factor
        self.latent_channels = config.latent_channels
        group_channels = 3 * config.temporal_factor * 4  # colour x frames x (2x2 pixel-unshuffle)
        hidden = config.hidden_channels
        num_down = int(math.log2(config.spatial_factor)) - 1
        self.encoder = nn.Sequential(
            nn.Conv2d(group_channels, hidden, 3, padding=1),
            *[_ResidualBlock(hidden) for _ in range(config.num_res_blocks)],
            *[
                m
                for _ in range(num_down)
                for m in (nn.SiLU(), nn.Conv2d(hidden, hidden, 3, stride=2, padding=1))
            ],
            *[_ResidualBlock(hidden) for _ in range(config.num_res_blocks)],
            nn.SiLU(),
            nn.Conv2d(hidden, config.latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(config.latent_channels, hidden, 3, padding=1),
            *[_ResidualBlock(hidden) for _ in range(config.num_res_blocks)],
            *[
                m
                for _ in range(num_down)
                for m in (nn.SiLU(), nn.Conv2d(hidden, 4 * hidden, 3, padding=1), nn.PixelShuffle(2))
            ],
            *[_ResidualBlock(hidden) for _ in range(config.num_res_blocks)],
            nn.SiLU(),
            nn.Conv2d(hidden, group_channels, 3, padding=1),
        )
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    # -- groups (training works on these directly) -----------------------------------------------

    def frames_to_groups(self, pixels: Tensor) -> Tensor:
        """``[B, 3, F, H, W]`` -> ``[B * T, 3 * tf, H, W]`` (frame 0 repeated to fill group 0)."""
        tf = self.temporal_factor
        grouped = torch.cat([pixels[:, :, :1].expand(-1, -1, tf, -1, -1), pixels[:, :, 1:]], dim=2)
        return rearrange(grouped, "b c (t g) h w -> (b t) (c g) h w", g=tf)

    def groups_to_frames(self, groups: Tensor, batch: int) -> Tensor:
        """Inverse of :meth:`frames_to_groups`; group 0 of each clip becomes the mean of its slots."""
        tf = self.temporal_factor
        grouped = rearrange(groups, "(b t) (c g) h w -> b c (t g) h w", b=batch, g=tf)
        first = grouped[:, :, :tf].mean(dim=2, keepdim=True)
        return torch.cat([first, grouped[:, :, tf:]], dim=2)

    def encode_groups(self, groups: Tensor) -> Tensor:
        """Raw (unnormalised) latents ``[G, C, h, w]`` of frame groups ``[G, 3 * tf, H, W]``."""
        return self.encoder(F.pixel_unshuffle(groups, 2))

    def decode_groups(self, latents: Tensor) -> Tensor:
        """Frame groups ``[G, 3 * tf, H, W]`` from raw latents ``[G, C, h, w]``."""
        return F.pixel_shuffle(self.decoder(latents), 2)

    # -- VideoCodec ------------------------------------------------------------------------------

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latent_mean.to(like).view(shape), self.latent_std.to(like).view(shape)

    def _encode_block(self, pixels: Tensor) -> Tensor:
        weight = self.encoder[0].weight
        pixels = pixels.to(device=weight.device, dtype=weight.dtype)
        batch = pixels.shape[0]
        raw = rearrange(
            self.encode_groups(self.frames_to_groups(pixels)), "(b t) c h w -> b c t h w", b=batch
        )
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def _decode_block(self, latents: Tensor) -> Tensor:
        weight = self.decoder[0].weight
        latents = latents.to(device=weight.device, dtype=weight.dtype)
        mean, std = self._stats(latents)
        raw = rearrange(latents * std + mean, "b c t h w -> (b t) c h w")
        return self.groups_to_frames(self.decode_groups(raw), latents.shape[0])

    @torch.no_grad()
    def set_latent_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Store per-channel ``[C]`` latent mean and std (finite, std > 0)."""
        c = self.latent_channels
        for name, value in (("mean", mean), ("std", std)):
            if not isinstance(value, Tensor) or tuple(value.shape) != (c,):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{name}: expected a tensor of shape ({c},), got {shape}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name}: expected finite values")
        if bool((std <= 0).any()):
            raise ValueError(f"std: expected values > 0, got min {float(std.min())}")
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std)

    # -- folders ---------------------------------------------------------------------------------

    def _write_folder(self, folder: Path) -> None:
        save_safetensors(folder / WEIGHTS_FILE, self.state_dict(), metadata={"class": self.class_name})
        atomic_write_json(
            folder / "config.json",
            {
                "class": self.class_name,
                "format_version": FORMAT_VERSION,
                "config": asdict(self.config),
                "tiling": self.tiling.to_dict(),
            },
        )

    @classmethod
    def _read_folder(cls, folder: Path, config: dict[str, Any]) -> TinyVideoAutoencoder:
        fields = require_fields(folder, config, ("config",))["config"]
        try:
            model_config = TinyVideoAutoencoderConfig(**fields)
        except (TypeError, ValueError) as error:
            raise FileFormatError(folder / "config.json", f"bad model config {fields!r}: {error}") from error
        model = cls(model_config, tiling=tiling_from_config(folder, config))
        state = read_safetensors(folder / WEIGHTS_FILE, check_finite=True)
        expected = set(model.state_dict())
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise FileFormatError(
                folder / WEIGHTS_FILE,
                f"tensors do not match the config: missing {missing}, unexpected {unexpected}",
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise FileFormatError(
                folder / WEIGHTS_FILE, f"tensor shapes do not match the config: {error}"
            ) from error
        return model
