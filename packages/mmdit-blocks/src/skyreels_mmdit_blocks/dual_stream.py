"""Dual-stream MMDiT block (paper eqs. 1-3), numerically HunyuanVideo's double-stream block.

Latent (video or audio) and text tokens keep separate adaLN, QKV, output projections and MLPs and
meet in one attention over ``[latent; text]``:

    Q_x, K_x, V_x = QKV_x(adaLN_x(x))        Q_t, K_t, V_t = QKV_t(adaLN_t(t))         (1, 2)
    x', t' = Attention([Q_x; Q_t], [K_x; K_t], [V_x; V_t])                            (3)

with per-head RMSNorm on queries and keys, RoPE on the latent queries/keys only, gated residuals and
a gated GELU(tanh) MLP per stream. The optional text cross-attention of eq. 4 sits between the
attention and the MLP. The block runs in two stages so the joint transformer can put the audio-video
exchange (eq. 5) between them; ``forward`` runs both.

Shape legend: B batch, L latent tokens, Lt text tokens, D width, H heads, Dh head dim.
"""

from __future__ import annotations

import torch
from torch import nn

from skyreels_attention import AttentionConfig, AttentionKernel
from skyreels_mmdit_blocks.block_context import BlockContext, BlockState
from skyreels_mmdit_blocks.feed_forward import Activation, FeedForward, mlp_hidden_dim
from skyreels_mmdit_blocks.modulation import Modulation, modulate
from skyreels_mmdit_blocks.multihead import HeadRMSNorm, merge_heads, split_heads
from skyreels_mmdit_blocks.rotary import rotate_prefix
from skyreels_mmdit_blocks.staged_block import StagedBlock
from skyreels_mmdit_blocks.text_cross_attention import TextCrossAttention

__all__ = ["DualStreamBlock"]


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    # No-affine LayerNorm, eps 1e-6: the adaLN supplies scale and shift.
    return nn.functional.layer_norm(x, x.shape[-1:], eps=1e-6)


class _StreamAttentionInput(nn.Module):
    """One stream's fused QKV projection with per-head RMSNorm on q and k."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = HeadRMSNorm(dim // num_heads)
        self.k_norm = HeadRMSNorm(dim // num_heads)

    def forward(self, x_BLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x_BLD).chunk(3, dim=-1))
        return self.q_norm(q), self.k_norm(k), v


class DualStreamBlock(StagedBlock):
    """HunyuanVideo double-stream block with an optional zero-initialised text cross-attention.

    Args:
        dim: width D (= num_heads · head_dim).
        num_heads: attention heads H.
        mlp_ratio: MLP hidden width / D (4 in HunyuanVideo); width ``mlp_hidden_dim(dim, mlp_ratio)``.
        text_cross_attention: add eq. 4's text cross-attention after self-attention.
        attention: skyreels-attention backend choice, fixed at construction (None = automatic).
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
        mlp_dim = mlp_hidden_dim(dim, mlp_ratio)
        self.attention = AttentionKernel(attention)
        self.latent_modulation = Modulation(dim, 6)
        self.text_modulation = Modulation(dim, 6)
        self.latent_attn = _StreamAttentionInput(dim, num_heads)
        self.text_attn = _StreamAttentionInput(dim, num_heads)
        self.latent_out = nn.Linear(dim, dim)
        self.text_out = nn.Linear(dim, dim)
        self.latent_mlp = FeedForward(dim, mlp_dim, activation=Activation.GELU_TANH)
        self.text_mlp = FeedForward(dim, mlp_dim, activation=Activation.GELU_TANH)
        self.text_cross_attention = (
            TextCrossAttention(dim=dim, num_heads=num_heads, attention=attention)
            if text_cross_attention
            else None
        )

    def _attention_stage(
        self, latent_BLD: torch.Tensor, text_BTD: torch.Tensor, ctx: BlockContext
    ) -> BlockState:
        """Joint self-attention (eqs. 1-3) and, if present, text cross-attention (eq. 4)."""
        num_latent = latent_BLD.shape[1]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.latent_modulation(ctx.conditioning)
        t_shift_a, t_scale_a, t_gate_a, t_shift_m, t_scale_m, t_gate_m = self.text_modulation(
            ctx.conditioning
        )

        q_x, k_x, v_x = self.latent_attn(modulate(_layer_norm(latent_BLD), shift_a, scale_a))
        q_t, k_t, v_t = self.text_attn(modulate(_layer_norm(text_BTD), t_shift_a, t_scale_a))
        q_x = rotate_prefix(q_x, ctx.rotary, num_latent=num_latent, name="ctx.rotary")
        k_x = rotate_prefix(k_x, ctx.rotary, num_latent=num_latent, name="ctx.rotary")

        out = self.attention(
            torch.cat([q_x, q_t], dim=1),
            torch.cat([k_x, k_t], dim=1),
            torch.cat([v_x, v_t], dim=1),
            mask=ctx.joint_mask,
        )
        out = merge_heads(out)
        latent_BLD = latent_BLD + gate_a * self.latent_out(out[:, :num_latent])
        text_BTD = text_BTD + t_gate_a * self.text_out(out[:, num_latent:])

        if self.text_cross_attention is not None:
            latent_BLD = self.text_cross_attention(latent_BLD, ctx.text_context, text_mask=ctx.text_mask)
        return BlockState(latent_BLD, text_BTD, (shift_m, scale_m, gate_m, t_shift_m, t_scale_m, t_gate_m))

    def _feed_forward_stage(self, state: BlockState) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated MLP per stream, using the modulation the attention stage computed."""
        shift_m, scale_m, gate_m, t_shift_m, t_scale_m, t_gate_m = state.pending
        latent = state.latent + gate_m * self.latent_mlp(
            modulate(_layer_norm(state.latent), shift_m, scale_m)
        )
        text = state.text + t_gate_m * self.text_mlp(modulate(_layer_norm(state.text), t_shift_m, t_scale_m))
        return latent, text
