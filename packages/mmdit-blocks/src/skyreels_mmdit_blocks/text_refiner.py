"""Text embedding: HunyuanVideo's token refiner, or a plain linear projection.

The refiner maps text-encoder states ``[B, Lt, text_dim]`` to width D and refines them with a few
self-attention blocks whose residual gates are set by a conditioning vector
``c = MLP_t(sinusoid(timestep)) + MLP_p(masked_mean(text))``:

    x = x + g_a · Out(Attn(QKV(LN_1(x))))      (padded text keys ignored)
    x = x + g_m · MLP_silu(LN_2(x))            (g_a, g_m) = Linear(SiLU(c))

LN are affine LayerNorms (eps 1e-6); the gate layer starts at zero as in HunyuanVideo.

Shape legend: B batch, Lt text tokens, E text-encoder width, D width.
"""

from __future__ import annotations

import torch
from torch import nn

from skyreels_attention import AttentionConfig, AttentionKernel, KeyPaddingMask
from skyreels_mmdit_blocks.condition_embed import (
    TIMESTEP_CHANNELS,
    EmbeddingMLP,
    sinusoidal_timestep_embedding,
)
from skyreels_mmdit_blocks.feed_forward import Activation, FeedForward, mlp_hidden_dim
from skyreels_mmdit_blocks.modulation import Modulation
from skyreels_mmdit_blocks.multihead import merge_heads, split_heads

__all__ = ["TextTokenRefiner", "TokenRefinerBlock", "masked_mean"]


def masked_mean(tokens_BTE: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """[B, Lt, E] -> [B, E]: mean over the first ``lengths[b]`` tokens of each sample (all when None)."""
    if lengths is None:
        return tokens_BTE.mean(dim=1)
    keep = torch.arange(tokens_BTE.shape[1], device=tokens_BTE.device)[None, :] < lengths[:, None]
    weights = keep.to(torch.float32).unsqueeze(-1)
    return ((tokens_BTE.float() * weights).sum(dim=1) / weights.sum(dim=1)).to(tokens_BTE.dtype)


class TokenRefinerBlock(nn.Module):
    """HunyuanVideo individual token refiner block (self-attention + SiLU MLP, adaLN gates only)."""

    def __init__(
        self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, attention: AttentionConfig | None = None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention = AttentionKernel(attention)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_hidden_dim(dim, mlp_ratio), activation=Activation.SILU)
        self.gates = Modulation(dim, 2, zero_init=True)

    def forward(
        self, x_BTD: torch.Tensor, conditioning_BD: torch.Tensor, mask: KeyPaddingMask | None
    ) -> torch.Tensor:
        gate_a, gate_m = self.gates(conditioning_BD)
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(self.norm1(x_BTD)).chunk(3, dim=-1))
        out = self.attention(q, k, v, mask=mask)
        x_BTD = x_BTD + gate_a * self.out(merge_heads(out))
        return x_BTD + gate_m * self.mlp(self.norm2(x_BTD))


class TextTokenRefiner(nn.Module):
    """``[B, Lt, E]`` text-encoder states -> ``[B, Lt, D]`` refined text tokens (HunyuanVideo ``txt_in``)."""

    def __init__(
        self,
        *,
        text_dim: int,
        dim: int,
        num_heads: int,
        num_blocks: int = 2,
        mlp_ratio: float = 4.0,
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        self.proj_in = nn.Linear(text_dim, dim)
        self.timestep_mlp = EmbeddingMLP(TIMESTEP_CHANNELS, dim)
        self.pooled_mlp = EmbeddingMLP(text_dim, dim)
        self.blocks = nn.ModuleList(
            TokenRefinerBlock(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, attention=attention)
            for _ in range(num_blocks)
        )

    def forward(
        self, text_BTE: torch.Tensor, timestep: torch.Tensor, text_lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """text [B, Lt, E], timestep [B], text_lengths [B] or None (no padding) -> [B, Lt, D]."""
        conditioning = self.timestep_mlp(sinusoidal_timestep_embedding(timestep)) + self.pooled_mlp(
            masked_mean(text_BTE, text_lengths)
        )
        mask = KeyPaddingMask(valid_lengths=text_lengths) if text_lengths is not None else None
        x = self.proj_in(text_BTE)
        for block in self.blocks:
            x = block(x, conditioning, mask)
        return x
