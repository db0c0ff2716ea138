"""Where a video token sits in its frame: an optional, zero-initialised absolute position signal.

Beyond the paper. HunyuanVideo-style branches (and SkyReels-V4's) know positions only through RoPE, which
is relative: with bidirectional attention nothing tells a token how far it is from the frame's edges.
In a world whose events happen at the edges (objects hitting the walls of the frame), that is what
the audio has to read. ``FramePositionEmbedding`` adds to every grid token a projection of sine and
cosine features of its normalised row and column, ``u = (i + 0.5) / n`` in (0, 1), at the frequencies
``π · 2^k`` for ``k < K`` (``sin(π u)`` is the distance to the nearer edge, ``cos(π u)`` which edge).
The projection starts at zero, so a model with it computes exactly what the model without it does
until training moves it (and checkpoints without it load with it at zero).

Shape legend: t, h, w token grid; K frequencies; D width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FramePositionEmbedding", "frame_position_features"]


def frame_position_features(
    grid: tuple[int, int, int], num_frequencies: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """``[t·h·w, 4K]`` float32 features in token order ``(t h w)``: row sines, row cosines, column sines,
    column cosines, each at ``π · 2^k`` for ``k < K``; the same for every frame."""
    t, h, w = grid
    if isinstance(num_frequencies, bool) or not isinstance(num_frequencies, int) or num_frequencies < 1:
        raise ValueError(f"num_frequencies must be an int >= 1; got {num_frequencies!r}")
    frequencies = math.pi * 2.0 ** torch.arange(num_frequencies, device=device, dtype=torch.float32)

    def features(n: int) -> torch.Tensor:  # [n, 2K]
        angles = ((torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n)[:, None] * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows = features(h)[:, None, :].expand(h, w, -1)
    columns = features(w)[None, :, :].expand(h, w, -1)
    frame = torch.cat([rows, columns], dim=-1).reshape(h * w, -1)
    return frame.repeat(t, 1)


class FramePositionEmbedding(nn.Module):
    """``grid -> [1, t·h·w, D]``: a zero-initialised linear map of ``frame_position_features``."""

    def __init__(self, *, dim: int, num_frequencies: int) -> None:
        super().__init__()
        if isinstance(num_frequencies, bool) or not isinstance(num_frequencies, int) or num_frequencies < 1:
            raise ValueError(f"num_frequencies must be an int >= 1; got {num_frequencies!r}")
        self.num_frequencies = num_frequencies
        self.proj = nn.Linear(4 * num_frequencies, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, grid: tuple[int, int, int]) -> torch.Tensor:
        weight = self.proj.weight
        features = frame_position_features(tuple(grid), self.num_frequencies, device=weight.device)
        return self.proj(features.to(weight.dtype))[None]
