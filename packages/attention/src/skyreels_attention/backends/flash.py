"""FlashAttention 2 (`flash_attn`) or 3 (`flash_attn_interface`), when importable on a CUDA machine.

Key padding runs through the varlen entry point: the valid keys of every sample are packed into
one `[sum(valid), H, D]` tensor with cumulative offsets, so padded keys cost nothing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from ..masks import AttentionMask, MaskKind
from .base import AttentionBackend, BackendCapabilities

__all__ = ["FlashBackend", "pack_keys_for_varlen"]


def _import_flash() -> tuple[ModuleType | None, str]:
    errors = []
    for name in ("flash_attn_interface", "flash_attn"):  # FA3 first, then FA2
        try:
            return importlib.import_module(name), name
        except Exception as exc:  # ImportError, or a CUDA error raised at import
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return None, "; ".join(errors)


def pack_keys_for_varlen(
    q: Tensor, k: Tensor, v: Tensor, valid_lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int, int]:
    """Pack for the varlen kernels: queries whole, keys/values without their padding.

    Returns (q_packed [B*Lq, H, D], k_packed [N, H, D], v_packed [N, H, D], cu_seqlens_q [B+1],
    cu_seqlens_k [B+1] (int32), max_seqlen_q, max_seqlen_k) with N = sum(valid_lengths).
    """
    batch, lq = q.shape[:2]
    lk = k.shape[1]
    valid_lengths = valid_lengths.to(device=k.device, dtype=torch.int32)
    keep = torch.arange(lk, device=k.device)[None, :] < valid_lengths[:, None]  # [B, Lk]
    k_packed, v_packed = k[keep], v[keep]
    zero = torch.zeros(1, dtype=torch.int32, device=k.device)
    cu_k = torch.cat([zero, valid_lengths.cumsum(0, dtype=torch.int32)])
    cu_q = torch.arange(0, (batch + 1) * lq, lq, dtype=torch.int32, device=q.device)
    return q.reshape(batch * lq, *q.shape[2:]), k_packed, v_packed, cu_q, cu_k, lq, int(valid_lengths.max())


class FlashBackend(AttentionBackend):
    name = "flash"
    capabilities = BackendCapabilities(
        dtypes={"cuda": frozenset({torch.float16, torch.bfloat16})},
        mask_kinds=frozenset({MaskKind.NONE, MaskKind.KEY_PADDING}),
        max_head_dim=256,
        head_dim_multiple=8,
        deterministic=False,
        notes=("FlashAttention 3 when `flash_attn_interface` imports, else FlashAttention 2",),
    )

    def __init__(self) -> None:
        self._module, self._detail = _import_flash()

    def environment_reasons(self) -> list[str]:
        reasons = []
        if self._module is None:
            reasons.append(f"flash-attn is not importable ({self._detail})")
        if not torch.cuda.is_available():
            reasons.append("no CUDA device")
        return reasons

    def extra_reasons(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None) -> list[str]:
        if q.device.type == "cuda" and torch.cuda.get_device_capability(q.device)[0] < 8:
            return ["needs a GPU of compute capability >= 8.0 (Ampere or newer)"]
        return []

    @staticmethod
    def _first(result: Tensor | tuple) -> Tensor:
        # FA3 returns (out, lse) in some versions; FA2 returns out.
        return result[0] if isinstance(result, tuple) else result

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None, scale: float) -> Tensor:
        fa = self._module
        assert fa is not None  # guarded by not_supported_reasons
        if mask is None:
            return self._first(fa.flash_attn_func(q, k, v, softmax_scale=scale))
        valid = mask.valid_lengths
        qp, kp, vp, cu_q, cu_k, max_q, max_k = pack_keys_for_varlen(q, k, v, valid)
        if max_k == 0:  # no sample has a key: the kernels are not defined for empty key sets
            return q.mul(0.0)
        out = self._first(
            fa.flash_attn_varlen_func(qp, kp, vp, cu_q, cu_k, max_q, max_k, softmax_scale=scale)
        )
        out = out.reshape(q.shape)
        # Samples with no valid key at all attend to nothing: zero, like every other backend.
        return out.masked_fill((valid.to(q.device) == 0)[:, None, None, None], 0.0)
