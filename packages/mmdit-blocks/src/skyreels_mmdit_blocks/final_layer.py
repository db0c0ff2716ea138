"""Output head: continuous adaLN then a linear map to patch features (AdaLayerNormContinuous semantics).

    y = Linear(LN(x)·(1 + scale) + shift),   (shift, scale) = Linear(SiLU(c))

LN has no affine parameters (eps 1e-6). The modulation stores (shift, scale) -- the official
HunyuanVideo order; diffusers' ``norm_out.linear`` stores (scale, shift) and is swapped on import.
"""

from __future__ import annotations

import torch
from torch import nn

from skyreels_mmdit_blocks.modulation import Modulation, modulate

__all__ = ["FinalLayer"]


class FinalLayer(nn.Module):
    """``[B, L, D]`` tokens + c ``[B, D]`` -> ``[B, L, out_features]`` patch features."""

    def __init__(self, *, dim: int, out_features: int) -> None:
        super().__init__()
        self.modulation = Modulation(dim, 2)
        self.proj = nn.Linear(dim, out_features)

    def forward(self, x_BLD: torch.Tensor, conditioning_BD: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(conditioning_BD)
        return self.proj(modulate(nn.functional.layer_norm(x_BLD, x_BLD.shape[-1:], eps=1e-6), shift, scale))
