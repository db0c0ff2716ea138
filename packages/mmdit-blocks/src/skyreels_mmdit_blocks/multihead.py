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

    Computed in float32 -- statistics *and* gain -- and returned in ``x``'s dtype. Returning x's dtype
    matters under ``torch.autocast`` (Lightning's bf16-mixed): the gain stays a float32 parameter
    there, and multiplying a bf16 activation by it would promote q and k back to float32 while v
    (straight from a Linear) stays bf16, which the attention call rejects.
    """

    def __init__(self, head_dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)
