"""Latents <-> tokens: patch embeddings, their channel widening, and unpatchify.

Video latents ``[B, C, T, H, W]`` become ``L = (T/pt)(H/ph)(W/pw)`` tokens in t-major order (the order
of ``skyreels_av_rope.video_grid_positions``); audio latents ``[B, C, La]`` become ``La/p`` tokens.
Patch features are ordered (C, p_t, p_h, p_w) -- HunyuanVideo's order -- in both directions.

``widen_patch_embed`` supports eq. 7: the video branch reads ``Concat(V, I, M)`` (e.g. 16 + 16 + 1 = 33
channels) while a text-to-video checkpoint was trained on V alone. The new input channels start at
zero, so the widened embedding ignores I and M until training moves them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

__all__ = [
    "AudioPatchEmbed",
    "VideoGrid",
    "VideoPatchEmbed",
    "patchify_video",
    "unpatchify_audio",
    "unpatchify_video",
    "widen_patch_embed",
]


class VideoGrid(NamedTuple):
    """Token grid after patching: frames, rows, columns."""

    t: int
    h: int
    w: int


def _check_video(latents: torch.Tensor, channels: int, patch: tuple[int, int, int], name: str) -> VideoGrid:
    if latents.ndim != 5:
        raise ValueError(f"{name} must be [B, C, T, H, W]; got shape {tuple(latents.shape)}")
    if latents.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels; got {latents.shape[1]}")
    sizes = latents.shape[2:]
    if any(s % p for s, p in zip(sizes, patch)):
        raise ValueError(f"{name} (T, H, W) = {tuple(sizes)} must be divisible by the patch size {patch}")
    return VideoGrid(*(s // p for s, p in zip(sizes, patch)))


class VideoPatchEmbed(nn.Module):
    """Conv3d with kernel = stride = patch: ``[B, C, T, H, W] -> ([B, L, D], grid)``."""

    def __init__(self, *, in_channels: int, dim: int, patch_size: tuple[int, int, int] = (1, 2, 2)) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(
        self, latents: torch.Tensor, *, name: str = "video_latents"
    ) -> tuple[torch.Tensor, VideoGrid]:
        grid = _check_video(latents, self.in_channels, self.patch_size, name)
        tokens = rearrange(self.proj(latents), "b d t h w -> b (t h w) d")
        return tokens, grid


class AudioPatchEmbed(nn.Module):
    """Conv1d with kernel = stride = patch: ``[B, C, La] -> [B, La/p, D]``."""

    def __init__(self, *, in_channels: int, dim: int, patch_size: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = (int(patch_size),)
        self.proj = nn.Conv1d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, latents: torch.Tensor, *, name: str = "audio_latents") -> tuple[torch.Tensor, int]:
        if latents.ndim != 3:
            raise ValueError(f"{name} must be [B, C, L]; got shape {tuple(latents.shape)}")
        if latents.shape[1] != self.in_channels:
            raise ValueError(f"{name} must have {self.in_channels} channels; got {latents.shape[1]}")
        if latents.shape[2] % self.patch_size[0]:
            raise ValueError(
                f"{name} length {latents.shape[2]} must be divisible by patch {self.patch_size[0]}"
            )
        tokens = rearrange(self.proj(latents), "b d l -> b l d")
        return tokens, tokens.shape[1]


def widen_patch_embed(
    embed: VideoPatchEmbed | AudioPatchEmbed, in_channels: int
) -> VideoPatchEmbed | AudioPatchEmbed:
    """A copy of ``embed`` reading ``in_channels`` >= its current count; the new channels get zero weights.

    The existing channels keep their index (Concat(V, I, M) puts the pretrained V first), so the widened
    embedding gives the same tokens as before for any values in the new channels.
    """
    old = embed.in_channels
    if in_channels < old:
        raise ValueError(f"in_channels must be >= the current {old} to widen; got {in_channels}")
    dim = embed.proj.out_channels
    if isinstance(embed, VideoPatchEmbed):
        wide: VideoPatchEmbed | AudioPatchEmbed = VideoPatchEmbed(
            in_channels=in_channels, dim=dim, patch_size=embed.patch_size
        )
    else:
        wide = AudioPatchEmbed(in_channels=in_channels, dim=dim, patch_size=embed.patch_size[0])
    wide = wide.to(device=embed.proj.weight.device, dtype=embed.proj.weight.dtype)
    with torch.no_grad():
        wide.proj.weight.zero_()
        wide.proj.weight[:, :old].copy_(embed.proj.weight)
        wide.proj.bias.copy_(embed.proj.bias)
    return wide


def patchify_video(latents: torch.Tensor, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """Reference patching without a conv: [B, C, T, H, W] -> [B, L, C·pt·ph·pw], features (C, pt, ph, pw)."""
    pt, ph, pw = patch_size
    return rearrange(latents, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)


def unpatchify_video(tokens: torch.Tensor, grid: VideoGrid, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """[B, L, C·pt·ph·pw] (features ordered C, pt, ph, pw) -> [B, C, T·pt, H·ph, W·pw]."""
    pt, ph, pw = patch_size
    return rearrange(
        tokens,
        "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)",
        t=grid.t,
        h=grid.h,
        w=grid.w,
        pt=pt,
        ph=ph,
        pw=pw,
    )


def unpatchify_audio(tokens: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, L, C·p] (features ordered C, p) -> [B, C, L·p]."""
    return rearrange(tokens, "b l (c p) -> b c (l p)", p=patch_size)
