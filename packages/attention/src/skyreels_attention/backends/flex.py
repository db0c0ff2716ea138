"""torch.compile'd FlexAttention. Masks become a `mask_mod` (and a `BlockMask` that skips fully
masked tiles); additive masks become a `score_mod`.

On CPU, compiled flex attention runs forward only (no CPU backward in torch), and the first
compile takes seconds, so automatic selection never picks it; ask for it by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..compiled_flex import run_compiled
from ..masks import AttentionMask, MaskKind
from .base import AttentionBackend, BackendCapabilities

__all__ = ["FlexBackend"]


def _flex_dense(q: Tensor, k: Tensor, v: Tensor, score_mod, block_mask, scale: float) -> Tensor:
    """flex_attention behind a code object of this backend's own (see block_sparse/flex.py)."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


_HALF_AND_FULL = frozenset({torch.float32, torch.float16, torch.bfloat16})


class FlexBackend(AttentionBackend):
    name = "flex"
    capabilities = BackendCapabilities(
        # CPU: fp32 only. torch 2.13's Inductor emits C++ that does not compile for half-precision
        # flex kernels once shapes have become dynamic (a bf16 conformance case hit it).
        dtypes={"cpu": frozenset({torch.float32}), "cuda": _HALF_AND_FULL},
        mask_kinds=frozenset(MaskKind),
        head_dim_multiple=8,
        cpu_backward=False,
        notes=("compiles on first use (seconds); not chosen automatically",),
    )

    def __init__(self) -> None:
        try:
            from torch.nn.attention import flex_attention as flex_module

            self._flex_module = flex_module
            self._detail = ""
        except Exception as exc:
            self._flex_module = None
            self._detail = f"{type(exc).__name__}: {exc}"
        self._compiled: Callable | None = None

    def environment_reasons(self) -> list[str]:
        if self._flex_module is None:
            return [f"torch.nn.attention.flex_attention is not importable ({self._detail})"]
        return []

    def _kernel(self) -> Callable:
        if self._compiled is None:  # compile once per process, on first use
            # Static shapes: Inductor's CPU code for dynamic-shape flex kernels fails to compile in
            # torch 2.13 (seen with key-padding masks), and the block-sparse op compiles statically too.
            # Our own wrapper: its compile cache is not shared with the block-sparse flex backend.
            self._compiled = torch.compile(_flex_dense, dynamic=False)
        return self._compiled

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None, scale: float) -> Tensor:
        batch, lq, heads, _ = q.shape
        lk = k.shape[1]
        score_mod = None
        block_mask = None
        if mask is not None:
            if mask.kind is MaskKind.DENSE_ADDITIVE:
                bias = mask.additive(q.dtype, q.device).expand(batch, heads, lq, lk)

                def score_mod(score, b, h, q_idx, kv_idx):
                    return score + bias[b, h, q_idx, kv_idx]

            else:
                allowed = mask.to_dense(batch, heads, lq, lk, q.device).expand(batch, heads, lq, lk)

                def mask_mod(b, h, q_idx, kv_idx):
                    return allowed[b, h, q_idx, kv_idx]

                block_mask = self._flex_module.create_block_mask(
                    mask_mod, batch, heads, lq, lk, device=q.device
                )
        q_t, k_t, v_t = (x.transpose(1, 2) for x in (q, k, v))
        out = run_compiled(self._kernel(), q_t, k_t, v_t, score_mod, block_mask, scale)
        return out.transpose(1, 2)
