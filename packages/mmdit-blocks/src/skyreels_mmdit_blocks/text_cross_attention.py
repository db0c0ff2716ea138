"""Text cross-attention after self-attention (paper eq. 4), Wan-style and zero-initialised.

    x'' = x' + Out(Attention(Q = RMS(W_q LN(x')), K = RMS(W_k t), V = W_v t))

LN is an affine LayerNorm, RMS a per-head RMSNorm. ``Out`` starts at zero (weight and bias), so a
block with this layer added reproduces the pretrained text-to-video block exactly until training
moves it (ARCHITECTURE.md section 4, "new layers start at zero").

Without autograd (sampling under ``torch.no_grad`` / ``inference_mode``) a layer whose ``Out`` is a
plain Linear that is still exactly zero, as in a model converted from a text-to-video checkpoint and
not yet trained, is the identity ``x'' = x'`` and is skipped: the same values (for finite inputs)
without its cost. A LoRA-wrapped or quantised ``Out`` always runs (``zero_layers.is_zero_linear``). With
autograd on it always runs, since ``Out``'s gradient needs the attention output. Not under
``torch.compile`` (the check is data-dependent and would break the graph).
"""

from __future__ import annotations

import torch
from torch import nn

from skyreels_attention import AttentionConfig, AttentionKernel, KeyPaddingMask
from skyreels_mmdit_blocks.multihead import HeadRMSNorm, merge_heads, split_heads
from skyreels_mmdit_blocks.zero_layers import is_zero_linear

__all__ = ["TextCrossAttention"]


class TextCrossAttention(nn.Module):
    """Latent tokens query the text tokens; the residual update starts at exactly zero."""

    def __init__(self, *, dim: int, num_heads: int, attention: AttentionConfig | None = None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads; got dim={dim}, num_heads={num_heads}")
        self.num_heads = num_heads
        self.attention = AttentionKernel(attention)
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=True)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = HeadRMSNorm(dim // num_heads)
        self.k_norm = HeadRMSNorm(dim // num_heads)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def output_is_zero(self) -> bool:
        """True while ``Out`` is a plain Linear whose weight and bias are exactly zero (the layer adds
        nothing); False for a wrapped (LoRA) or quantised ``Out`` (``zero_layers.is_zero_linear``)."""
        return is_zero_linear(self.out)

    def forward(
        self, latent_BLD: torch.Tensor, text_BTD: torch.Tensor, *, text_mask: KeyPaddingMask | None
    ) -> torch.Tensor:
        """latent [B, L, D], text [B, Lt, D] -> updated latent [B, L, D] (residual included)."""
        if not torch.is_grad_enabled() and not torch.compiler.is_compiling() and self.output_is_zero():
            return latent_BLD
        q = self.q_norm(split_heads(self.q(self.norm(latent_BLD)), self.num_heads))
        k, v = self.kv(text_BTD).chunk(2, dim=-1)
        k = self.k_norm(split_heads(k, self.num_heads))
        v = split_heads(v, self.num_heads)
        out = self.attention(q, k, v, mask=text_mask)
        return latent_BLD + self.out(merge_heads(out))
