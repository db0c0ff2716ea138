"""Single-stream MMDiT block (paper section 3.1), numerically HunyuanVideo's single-stream block.

Latent and text tokens are concatenated and share every parameter. One Linear produces q, k, v and
the MLP hidden state together, attention and MLP run in parallel, and one Linear maps
``cat(attention, GELU_tanh(mlp))`` (width D + mlp_dim) back to D:

    h = adaLN(cat(x, t));   [q | k | v | m] = W_in h
    cat(x, t) += gate · W_out cat(Attention(RMS(q), RMS(k), v), GELU(m))

RoPE is applied to the latent part of q and k only. An optional zero-initialised text
cross-attention (eq. 4) follows the block's update; there is no separate feed-forward stage.

Shape legend: B batch, L latent tokens, Lt text tokens, D width, H heads.
"""

from __future__ import annotations

import torch
from torch import nn

from skyreels_attention import AttentionConfig, AttentionKernel
from skyreels_mmdit_blocks.block_context import BlockContext, BlockState
from skyreels_mmdit_blocks.feed_forward import mlp_hidden_dim
from skyreels_mmdit_blocks.modulation import Modulation, modulate
from skyreels_mmdit_blocks.multihead import HeadRMSNorm, merge_heads, split_heads
from skyreels_mmdit_blocks.rotary import rotate_prefix
from skyreels_mmdit_blocks.staged_block import StagedBlock
from skyreels_mmdit_blocks.text_cross_attention import TextCrossAttention

__all__ = ["SingleStreamBlock"]


class SingleStreamBlock(StagedBlock):
    """HunyuanVideo single-stream block with an optional zero-initialised text cross-attention.

    Args are as for ``DualStreamBlock``.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        text_cross_attention: bool = False,
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads; got dim={dim}, num_heads={num_heads}")
        self.dim = dim
        self.mlp_dim = mlp_hidden_dim(dim, mlp_ratio)
        self.num_heads = num_heads
        self.attention = AttentionKernel(attention)
        self.modulation = Modulation(dim, 3)
        self.qkv_mlp_in = nn.Linear(dim, 3 * dim + self.mlp_dim)
        self.q_norm = HeadRMSNorm(dim // num_heads)
        self.k_norm = HeadRMSNorm(dim // num_heads)
        self.attn_mlp_out = nn.Linear(dim + self.mlp_dim, dim)
        self.text_cross_attention = (
            TextCrossAttention(dim=dim, num_heads=num_heads, attention=attention)
            if text_cross_attention
            else None
        )

    def _attention_stage(
        self, latent_BLD: torch.Tensor, text_BTD: torch.Tensor, ctx: BlockContext
    ) -> BlockState:
        """The whole parallel attention + MLP update, then text cross-attention if present."""
        num_latent = latent_BLD.shape[1]
        shift, scale, gate = self.modulation(ctx.conditioning)
        tokens = torch.cat([latent_BLD, text_BTD], dim=1)
        hidden = modulate(nn.functional.layer_norm(tokens, (self.dim,), eps=1e-6), shift, scale)

        qkv, mlp = self.qkv_mlp_in(hidden).split([3 * self.dim, self.mlp_dim], dim=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in qkv.chunk(3, dim=-1))
        q = rotate_prefix(self.q_norm(q), ctx.rotary, num_latent=num_latent, name="ctx.rotary")
        k = rotate_prefix(self.k_norm(k), ctx.rotary, num_latent=num_latent, name="ctx.rotary")
        out = self.attention(q, k, v, mask=ctx.joint_mask)

        update = self.attn_mlp_out(
            torch.cat([merge_heads(out), nn.functional.gelu(mlp, approximate="tanh")], dim=-1)
        )
        tokens = tokens + gate * update
        latent_BLD, text_BTD = tokens[:, :num_latent], tokens[:, num_latent:]
        if self.text_cross_attention is not None:
            latent_BLD = self.text_cross_attention(latent_BLD, ctx.text_context, text_mask=ctx.text_mask)
        return BlockState(latent_BLD, text_BTD)

    def _feed_forward_stage(self, state: BlockState) -> tuple[torch.Tensor, torch.Tensor]:
        """Nothing left to do: the MLP ran in parallel with attention."""
        return state.latent, state.text
