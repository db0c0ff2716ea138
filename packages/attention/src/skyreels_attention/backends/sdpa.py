"""PyTorch's `scaled_dot_product_attention` (which itself picks flash / efficient / math kernels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..masks import AttentionMask, MaskKind
from .base import AttentionBackend, BackendCapabilities

__all__ = ["SdpaBackend"]

_FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


class SdpaBackend(AttentionBackend):
    name = "sdpa"
    capabilities = BackendCapabilities(
        dtypes={"cpu": _FLOATS, "cuda": _FLOATS, "mps": frozenset({torch.float32, torch.float16})},
        mask_kinds=frozenset(MaskKind),
        deterministic=False,  # its CUDA flash/efficient backward kernels use atomics
        notes=("block masks are materialised densely; use block_sparse_attention for real sparsity",),
    )

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None, scale: float) -> Tensor:
        batch, lq, heads, _ = q.shape
        lk = k.shape[1]
        attn_mask = None
        empty_rows = None
        if mask is not None:
            if mask.kind is MaskKind.DENSE_ADDITIVE:
                attn_mask = mask.additive(q.dtype, q.device)
            else:
                attn_mask = mask.to_dense(batch, heads, lq, lk, q.device)
                # Fully masked rows must be zero on every kernel, not only on the math one. Always
                # applied (an elementwise fill) rather than tested first: the test would be a
                # device-to-host sync on every call.
                empty_rows = ~attn_mask.any(dim=-1, keepdim=True)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask, scale=scale
        )
        if empty_rows is not None:
            out = out.masked_fill(empty_rows, 0.0)
        return out.transpose(1, 2)
