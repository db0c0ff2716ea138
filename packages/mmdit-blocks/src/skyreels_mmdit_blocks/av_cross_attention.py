"""Bidirectional audio-video cross-attention (paper eq. 5), zero-initialised.

    a' = a + CrossAttn(Q = a, K = v, V = v)
    v' = v + CrossAttn(Q = v, K = a', V = a')      (paper order: video reads the updated audio)

``AVExchangeOrder.PARALLEL`` lets both read the state before the update (``K = V = a`` above), which
is what e.g. Ovi does and lets the two directions run concurrently. Both branches have width D, so
no projection is needed between them (paper 3.1).

Each direction: affine LayerNorm on the query stream and on the context stream, q/k/v projections,
per-head RMSNorm on q and k, RoPE on q and k from each token's *time* only (see ``JointAudioVideo
Transformer``: video tokens at their latent frame, audio tokens at their frame scaled into video
latent units), and a zero-initialised output projection, so adding the exchange to a pretrained
text-to-video model changes nothing until training moves it.

Shape legend: B batch, Lv video tokens, La audio tokens, D width, H heads.
"""

from __future__ import annotations

import enum

import torch
from torch import nn

from skyreels_attention import AttentionConfig, AttentionKernel
from skyreels_mmdit_blocks.block_context import Rotary
from skyreels_mmdit_blocks.multihead import HeadRMSNorm, merge_heads, split_heads
from skyreels_mmdit_blocks.rotary import rotate_prefix

__all__ = ["AVExchangeOrder", "AudioVideoCrossAttention", "CrossModalAttention"]


class AVExchangeOrder(enum.Enum):
    """Which audio state the video reads in eq. 5."""

    SEQUENTIAL = "sequential"  # the paper: audio reads video, then video reads the *updated* audio
    PARALLEL = "parallel"  # both read the states from before the exchange


class CrossModalAttention(nn.Module):
    """One direction of the exchange: ``x + Out(Attn(q(x), k(ctx), v(ctx)))`` with ``Out`` = 0 at init."""

    def __init__(self, *, dim: int, num_heads: int, attention: AttentionConfig | None = None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads; got dim={dim}, num_heads={num_heads}")
        self.num_heads = num_heads
        self.attention = AttentionKernel(attention)
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.context_norm = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = HeadRMSNorm(dim // num_heads)
        self.k_norm = HeadRMSNorm(dim // num_heads)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x_BLD: torch.Tensor,
        context_BSD: torch.Tensor,
        *,
        x_rotary: Rotary | None,
        context_rotary: Rotary | None,
    ) -> torch.Tensor:
        """x [B, L, D] reads context [B, S, D] -> updated x [B, L, D] (residual included)."""
        q = self.q_norm(split_heads(self.q(self.query_norm(x_BLD)), self.num_heads))
        k, v = self.kv(self.context_norm(context_BSD)).chunk(2, dim=-1)
        k = self.k_norm(split_heads(k, self.num_heads))
        q = rotate_prefix(q, x_rotary)
        k = rotate_prefix(k, context_rotary)
        out = self.attention(q, k, split_heads(v, self.num_heads))
        return x_BLD + self.out(merge_heads(out))


class AudioVideoCrossAttention(nn.Module):
    """Eq. 5 at one depth: ``audio_from_video`` then ``video_from_audio`` in the configured order."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        order: AVExchangeOrder = AVExchangeOrder.SEQUENTIAL,
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(order, AVExchangeOrder):
            raise TypeError(f"order must be an AVExchangeOrder; got {order!r}")
        self.order = order
        self.audio_from_video = CrossModalAttention(dim=dim, num_heads=num_heads, attention=attention)
        self.video_from_audio = CrossModalAttention(dim=dim, num_heads=num_heads, attention=attention)

    def forward(
        self,
        video_BLD: torch.Tensor,
        audio_BSD: torch.Tensor,
        *,
        video_rotary: Rotary | None,
        audio_rotary: Rotary | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, Lv, D], audio [B, La, D] -> (video', audio'), same shapes."""
        new_audio = self.audio_from_video(
            audio_BSD, video_BLD, x_rotary=audio_rotary, context_rotary=video_rotary
        )
        audio_read = new_audio if self.order is AVExchangeOrder.SEQUENTIAL else audio_BSD
        new_video = self.video_from_audio(
            video_BLD, audio_read, x_rotary=video_rotary, context_rotary=audio_rotary
        )
        return new_video, new_audio
