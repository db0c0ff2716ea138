"""xFormers' memory-efficient attention (CUDA), when importable."""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from ..masks import AttentionMask, MaskKind
from .base import AttentionBackend, BackendCapabilities

__all__ = ["XformersBackend"]


class XformersBackend(AttentionBackend):
    name = "xformers"
    capabilities = BackendCapabilities(
        dtypes={"cuda": frozenset({torch.float32, torch.float16, torch.bfloat16})},
        mask_kinds=frozenset(MaskKind),
        max_head_dim=256,
        deterministic=False,
        notes=("masks are passed as a dense additive bias",),
    )

    def __init__(self) -> None:
        try:
            self._ops = importlib.import_module("xformers.ops")
            self._detail = ""
        except Exception as exc:
            self._ops = None
            self._detail = f"{type(exc).__name__}: {exc}"

    def environment_reasons(self) -> list[str]:
        reasons = []
        if self._ops is None:
            reasons.append(f"xformers is not importable ({self._detail})")
        if not torch.cuda.is_available():
            reasons.append("no CUDA device (xformers attention kernels are CUDA only)")
        return reasons

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None, scale: float) -> Tensor:
        bias = None
        empty_rows = None
        if mask is not None:
            batch, lq, heads, _ = q.shape
            lk = k.shape[1]
            if mask.kind is MaskKind.DENSE_ADDITIVE:
                dense = mask.additive(q.dtype, q.device)
            else:
                allowed = mask.to_dense(batch, heads, lq, lk, q.device)
                empty_rows = ~allowed.any(dim=-1, keepdim=True).transpose(1, 2)  # [B, Lq, H, 1]
                dense = torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
            # xformers wants a materialised bias whose last dim is 8-aligned in memory.
            padded = -(-lk // 8) * 8
            storage = torch.zeros(batch, heads, lq, padded, dtype=q.dtype, device=q.device)
            storage[..., :lk] = dense.expand(batch, heads, lq, lk)
            bias = storage[..., :lk]
        out = self._ops.memory_efficient_attention(q, k, v, attn_bias=bias, scale=scale)
        if empty_rows is not None:
            out = out.masked_fill(empty_rows, 0.0)
        return out
