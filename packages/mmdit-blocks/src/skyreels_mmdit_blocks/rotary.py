"""Apply RoPE to the first tokens of a query/key tensor (the latent part of a joint sequence)."""

from __future__ import annotations

import torch

from skyreels_av_rope import apply_rotary
from skyreels_mmdit_blocks.block_context import Rotary

__all__ = ["rotate_prefix"]


def rotate_prefix(
    x_BLHK: torch.Tensor,
    rotary: Rotary | None,
    *,
    num_latent: int | None = None,
    name: str = "rotary",
) -> torch.Tensor:
    """Rotate tokens ``[0, L_rope)`` of ``x [B, L, H, Dh]``; the rest (text) pass unchanged.

    HunyuanVideo applies RoPE to video queries/keys only; text tokens carry no position.

    Args:
        x_BLHK: queries or keys ``[B, L, H, Dh]``, latent tokens first.
        rotary: the RoPE table (``cos``/``sin`` ``[L_rope, Dh/2]`` or ``[B, L_rope, Dh/2]``), or None.
        num_latent: how many leading tokens of ``x`` are latent tokens. When given, the table must
            have exactly that many rows: a shorter table would otherwise rotate only some latent
            tokens and treat the others like text. Every block of this package passes it; None keeps
            the unchecked behaviour (rotate as many tokens as the table has rows).
        name: the argument named in the error message.

    Raises:
        ValueError: the table's row count differs from ``num_latent``, or ``num_latent`` is not an
            int in ``[0, L]``.
    """
    if rotary is None:
        return x_BLHK
    num_rotated = rotary.cos.shape[-2]
    if num_latent is not None:
        if (
            isinstance(num_latent, bool)
            or not isinstance(num_latent, int)
            or not 0 <= num_latent <= x_BLHK.shape[1]
        ):
            raise ValueError(f"num_latent must be an int in [0, {x_BLHK.shape[1]}]; got {num_latent!r}")
        if num_rotated != num_latent:
            raise ValueError(
                f"{name} must have one row per latent token: expected {num_latent} rows, got {num_rotated} "
                f"(cos shape {tuple(rotary.cos.shape)})"
            )
    if num_rotated == x_BLHK.shape[1]:
        return apply_rotary(x_BLHK, rotary.cos, rotary.sin)
    rotated = apply_rotary(x_BLHK[:, :num_rotated], rotary.cos, rotary.sin)
    return torch.cat([rotated, x_BLHK[:, num_rotated:]], dim=1)
