"""The reference backend: plain softmax attention in float32, the ground truth.

`naive_attention` is also the "plain torch math in the same dtype" baseline of the parity rule
(a backend's error against the fp32 reference may be at most twice that of this function run in
the backend's dtype).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..masks import AttentionMask, MaskKind
from .base import AttentionBackend, BackendCapabilities, autocast_off

__all__ = ["ReferenceBackend", "naive_attention"]

_ALL_FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


def naive_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask | None = None,
    scale: float | None = None,
    *,
    compute_dtype: torch.dtype | None = torch.float32,
) -> Tensor:
    """softmax(q k^T * scale + mask) v, written out. q `[B, Lq, H, D]`, k/v `[B, Lk, H, D]`.

    compute_dtype: dtype of every intermediate (None: the inputs' own dtype). Query rows with no
    attendable key return zeros. The result is cast back to q's dtype.
    """
    batch, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    scale = head_dim**-0.5 if scale is None else scale
    dt = q.dtype if compute_dtype is None else compute_dtype
    qf, kf, vf = (t.to(dt).transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
    logits = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    allowed = None
    if mask is not None:
        if mask.kind is MaskKind.DENSE_ADDITIVE:
            logits = logits + mask.additive(dt, q.device)
            allowed = torch.isfinite(logits)
        else:
            allowed = mask.to_dense(batch, heads, lq, lk, q.device)
            logits = logits.masked_fill(~allowed, float("-inf"))
    if allowed is not None:
        # Rows with no attendable key: softmax of all -inf is NaN; define them as zero output.
        empty = ~allowed.any(dim=-1, keepdim=True)
        logits = logits.masked_fill(empty, 0.0)
        probs = torch.softmax(logits, dim=-1).masked_fill(empty, 0.0)
    else:
        probs = torch.softmax(logits, dim=-1)
    out = torch.matmul(probs, vf)
    return out.transpose(1, 2).to(q.dtype)


class ReferenceBackend(AttentionBackend):
    name = "reference"
    capabilities = BackendCapabilities(
        dtypes={"cpu": _ALL_FLOATS, "cuda": _ALL_FLOATS, "mps": _ALL_FLOATS},
        mask_kinds=frozenset(MaskKind),
        notes=("computes in float32 (float64 inputs stay float64); O(L^2) memory",),
    )

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None, scale: float) -> Tensor:
        compute = torch.float64 if q.dtype == torch.float64 else torch.float32
        with autocast_off(q.device):
            return naive_attention(q, k, v, mask, scale, compute_dtype=compute)
