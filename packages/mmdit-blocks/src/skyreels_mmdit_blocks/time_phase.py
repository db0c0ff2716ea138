"""Where an audio token sits between two video latent frames: an optional, zero-initialised signal.

Beyond the paper. The audio tokens sit on the video's latent time axis (``k · T_v / T_a``, paper
3.1), several per latent frame, and know their time only through RoPE, which is relative: a token in
a silent stretch cannot tell at which part of a latent frame it sits. A video latent frame packs
several video frames (its channels say *when* within it an object hits a wall), so placing a sound on
the right audio token needs that phase. ``TimePhaseEmbedding`` adds to every audio token a projection
of ``sin(2π m τ)`` and ``cos(2π m τ)`` for ``m = 1..K``, with ``τ`` the token's time in latent frames
(the time axis of its RoPE positions): periodic in one latent frame, so it carries the phase and
nothing else. The projection starts at zero, so a model with it computes exactly what the model
without it does until training moves it (and checkpoints without it load with it at zero).

Shape legend: L tokens, K frequencies, D width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimePhaseEmbedding", "time_phase_features"]


def time_phase_features(time: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """``time [..., L]`` (in latent frames) -> ``[..., L, 2K]`` float32: ``sin(2π m τ)`` for
    ``m = 1..K``, then the cosines."""
    if isinstance(num_frequencies, bool) or not isinstance(num_frequencies, int) or num_frequencies < 1:
        raise ValueError(f"num_frequencies must be an int >= 1; got {num_frequencies!r}")
    if not isinstance(time, torch.Tensor):
        raise TypeError(f"time must be a torch.Tensor; got {type(time).__name__}")
    m = torch.arange(1, num_frequencies + 1, device=time.device, dtype=torch.float32)
    angles = 2 * math.pi * time.float()[..., None] * m
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimePhaseEmbedding(nn.Module):
    """``time [..., L] -> [..., L, D]``: a zero-initialised linear map of ``time_phase_features``."""

    def __init__(self, *, dim: int, num_frequencies: int) -> None:
        super().__init__()
        if isinstance(num_frequencies, bool) or not isinstance(num_frequencies, int) or num_frequencies < 1:
            raise ValueError(f"num_frequencies must be an int >= 1; got {num_frequencies!r}")
        self.num_frequencies = num_frequencies
        self.proj = nn.Linear(2 * num_frequencies, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        return self.proj(time_phase_features(time.to(weight.device), self.num_frequencies).to(weight.dtype))
