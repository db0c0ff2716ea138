"""A side-by-side picture of a video codec's reconstruction: original frames on top, decoded below."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from skyreels_v4.io import atomic_path
from skyreels_v4.vae.video_codec import VideoCodec

__all__ = ["write_reconstruction_picture"]


@torch.no_grad()
def write_reconstruction_picture(
    codec: VideoCodec,
    clip: Tensor,
    path: str | os.PathLike[str],
    *,
    num_frames_shown: int = 6,
    upscale: int = 4,
    gap: int = 4,
) -> Path:
    """Write a PNG of ``num_frames_shown`` evenly spaced frames of ``clip`` ``[1, 3, F, H, W]`` (top row)
    and of ``codec.decode(codec.encode(clip))`` (bottom row), each frame enlarged ``upscale`` times."""
    from PIL import Image

    if not isinstance(clip, Tensor) or clip.ndim != 5 or clip.shape[0] != 1:
        shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"clip: expected [1, 3, F, H, W], got {shape}")
    reconstruction = codec.decode(codec.encode(clip)).to(clip)
    frames = np.linspace(0, clip.shape[2] - 1, num_frames_shown).round().astype(int)
    height, width = clip.shape[3] * upscale, clip.shape[4] * upscale
    canvas = np.full((2 * height + gap, num_frames_shown * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for row, video in enumerate((clip, reconstruction)):
        for col, frame in enumerate(frames):
            image = ((video[0, :, frame].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            image = image.repeat(upscale, axis=0).repeat(upscale, axis=1)
            y, x = row * (height + gap), col * (width + gap)
            canvas[y : y + height, x : x + width] = image
    target = Path(path)
    with atomic_path(target, ".png") as temp:
        Image.fromarray(canvas).save(temp, format="PNG")
    return target
