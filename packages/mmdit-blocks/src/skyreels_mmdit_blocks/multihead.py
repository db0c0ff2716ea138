"""Head split/merge and the per-head RMSNorm applied to queries and keys.

Attention inputs use the flash-attention layout ``[B, L, H, Dh]`` (ARCHITECTURE.md section 3).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

__all__ = ["HeadRMSNorm", "merge_heads", "split_heads"]


def split_heads(x_BLD: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, H·Dh] -> [B, L, H, Dh]."""
    return rearrange(x_BLD, "b l (h d) -> b l h d", h=num_heads)


def merge_heads(x_BLHK: torch.Tensor) -> torch.Tensor:
    """[B, L, H, Dh] -> [B, L, H·Dh]."""
    return rearrange(x_BLHK, "b l h d -> b l (h d)")


class HeadRMSNorm(nn.Module):
    """RMSNorm over the last axis (one head's channels) with a learned gain, eps 1e-6.

    The statistics are computed in float32 and cast back before the gain, as HunyuanVideo does, so
    that bf16 activations are normalised as accurately as fp32 ones.
    """

    def __init__(self, head_dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight
