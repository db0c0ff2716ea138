"""Apply RoPE to the first tokens of a query/key tensor (the latent part of a joint sequence)."""

from __future__ import annotations

import torch

from skyreels_av_rope import apply_rotary
from skyreels_mmdit_blocks.block_context import Rotary

__all__ = ["rotate_prefix"]


def rotate_prefix(x_BLHK: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
    """Rotate tokens ``[0, L_rope)`` of ``x [B, L, H, Dh]``; the rest (text) pass unchanged.

    HunyuanVideo applies RoPE to video queries/keys only; text tokens carry no position.
    """
    if rotary is None:
        return x_BLHK
    num_rotated = rotary.cos.shape[-2]
    if num_rotated == x_BLHK.shape[1]:
        return apply_rotary(x_BLHK, rotary.cos, rotary.sin)
    rotated = apply_rotary(x_BLHK[:, :num_rotated], rotary.cos, rotary.sin)
    return torch.cat([rotated, x_BLHK[:, num_rotated:]], dim=1)
