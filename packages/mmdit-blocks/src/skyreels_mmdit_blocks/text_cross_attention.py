"""Text cross-attention after self-attention (paper eq. 4), Wan-style and zero-initialised.

    x'' = x' + Out(Attention(Q = RMS(W_q LN(x')), K = RMS(W_k t), V = W_v t))

LN is an affine LayerNorm, RMS a per-head RMSNorm. ``Out`` starts at zero (weight and bias), so a
block with this layer added reproduces the pretrained text-to-video block exactly until training
moves it (ARCHITECTURE.md section 4, "new layers start at zero").

Inside ``skipping_zero_text_cross_attention(model)`` (what the pipeline's sampling uses), a layer whose
``Out`` is a plain Linear that is still exactly zero, as in a model converted from a text-to-video
checkpoint and not yet trained, is the identity ``x'' = x'`` and is skipped while autograd is off: the
same values (for finite inputs) without its cost. The zero test runs once on entry (one host sync per
layer), not per call; a LoRA-wrapped or quantised ``Out`` always runs (``zero_layers.is_zero_linear``).
With autograd on it always runs, since ``Out``'s gradient needs the attention output.

Shape legend: B batch, L latent tokens, Lt text tokens, D width, H heads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from skyreels_attention import AttentionConfig, AttentionKernel, KeyPaddingMask
from skyreels_mmdit_blocks.multihead import HeadRMSNorm, merge_heads, split_heads
from skyreels_mmdit_blocks.zero_layers import is_zero_linear

__all__ = ["TextCrossAttention", "skipping_zero_text_cross_attention"]


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
        # Set only by skipping_zero_text_cross_attention, after checking that Out is exactly zero.
        self.skip_while_zero = False

    def forward(
        self, latent_BLD: torch.Tensor, text_BTD: torch.Tensor, *, text_mask: KeyPaddingMask | None
    ) -> torch.Tensor:
        """latent [B, L, D], text [B, Lt, D] -> updated latent [B, L, D] (residual included)."""
        if self.skip_while_zero and not torch.is_grad_enabled():
            return latent_BLD
        q = self.q_norm(split_heads(self.q(self.norm(latent_BLD)), self.num_heads))
        k, v = self.kv(text_BTD).chunk(2, dim=-1)
        k = self.k_norm(split_heads(k, self.num_heads))
        v = split_heads(v, self.num_heads)
        out = self.attention(q, k, v, mask=text_mask)
        return latent_BLD + self.out(merge_heads(out))


@contextmanager
def skipping_zero_text_cross_attention(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``TextCrossAttention`` in ``model`` whose ``Out`` is exactly zero
    (``is_zero_linear``, checked once here) returns its input unchanged when autograd is off. The weights
    must not change inside the block (sampling); the previous state is restored on exit."""
    layers = [m for m in model.modules() if isinstance(m, TextCrossAttention)]
    before = [m.skip_while_zero for m in layers]
    try:
        for m in layers:
            m.skip_while_zero = is_zero_linear(m.out)
        yield
    finally:
        for m, value in zip(layers, before, strict=True):
            m.skip_while_zero = value
