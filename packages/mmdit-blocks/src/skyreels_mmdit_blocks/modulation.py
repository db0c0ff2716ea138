"""Adaptive LayerNorm modulation (adaLN): the conditioning vector sets per-channel shift, scale, gate.

Every block of the branch (paper section 3.1, "separate parameters for adaptive layer normalization")
turns the conditioning vector ``c [B, D]`` (timestep + pooled text + optional guidance) into ``n``
vectors of width D: ``SiLU -> Linear(D, n·D) -> chunk``. The chunk order is always
(shift, scale, gate[, shift, scale, gate]) -- HunyuanVideo's order for blocks; its official final
layer also stores (shift, scale), diffusers stores (scale, shift) there (see ``hunyuan_names``).

Shape legend: B batch, L tokens, D width.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Modulation", "modulate"]


class Modulation(nn.Module):
    """``SiLU -> Linear(D, num_chunks·D)`` split into ``num_chunks`` tensors of shape [B, 1, D].

    The unit dimension lets the chunks broadcast over the token axis of ``[B, L, D]`` tokens.
    """

    def __init__(self, dim: int, num_chunks: int, *, zero_init: bool = False) -> None:
        super().__init__()
        self.num_chunks = num_chunks
        self.linear = nn.Linear(dim, num_chunks * dim)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, conditioning_BD: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """conditioning [B, D] -> ``num_chunks`` tensors [B, 1, D]."""
        params = self.linear(nn.functional.silu(conditioning_BD))
        return tuple(chunk.unsqueeze(1) for chunk in params.chunk(self.num_chunks, dim=-1))


def modulate(x_BLD: torch.Tensor, shift_B1D: torch.Tensor, scale_B1D: torch.Tensor) -> torch.Tensor:
    """``x·(1 + scale) + shift`` (adaLN; scale is predicted around 1 so zero means identity)."""
    return x_BLD * (1 + scale_B1D) + shift_B1D
