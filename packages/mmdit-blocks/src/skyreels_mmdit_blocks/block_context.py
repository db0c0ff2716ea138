"""What every block of one branch needs besides its token streams, computed once per forward.

Shape legend: B batch, L latent tokens (references included), Lt text tokens, D width, Dh head dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from skyreels_attention import DenseMask, KeyPaddingMask

__all__ = ["BlockContext", "BlockState", "Rotary"]


class Rotary(NamedTuple):
    """cos and sin, float32 ``[L, Dh/2]`` or ``[B, L, Dh/2]`` (interleaved pairs, skyreels-av-rope)."""

    cos: torch.Tensor
    sin: torch.Tensor


@dataclass(frozen=True)
class BlockContext:
    """Per-forward inputs shared by all blocks of a branch.

    conditioning: [B, D] timestep (+ guidance) + pooled-text vector that drives every adaLN.
    rotary: RoPE for the latent tokens (text tokens get none, as in HunyuanVideo).
    joint_mask: keys of the joint sequence ``[latent; text]`` (eq. 3) that may be attended: a key
        padding mask (keys at or beyond ``L + text_length[b]`` ignored), a dense ``[B, 1, 1, L + Lt]``
        key mask when latent keys are masked too, or None when every key counts.
    text_context: [B, Lt, D] keys/values of the text cross-attention (eq. 4): the refined text
        tokens as they enter the first block, constant over depth (as Wan's context).
    text_mask: key padding over ``text_context`` alone.
    """

    conditioning: torch.Tensor
    rotary: Rotary | None
    joint_mask: KeyPaddingMask | DenseMask | None
    text_context: torch.Tensor
    text_mask: KeyPaddingMask | None


class BlockState(NamedTuple):
    """The two token streams between a block's attention stage and its feed-forward stage.

    ``pending`` holds the feed-forward modulation already computed by the attention stage (empty for
    single-stream blocks, whose MLP runs in parallel with attention). The joint transformer edits
    ``latent`` here: the audio-video exchange (eq. 5) sits between the two stages (ARCHITECTURE.md 4).
    """

    latent: torch.Tensor
    text: torch.Tensor
    pending: tuple[torch.Tensor, ...] = ()
