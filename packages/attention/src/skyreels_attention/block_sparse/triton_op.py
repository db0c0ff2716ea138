"""The `triton` backend: launches our kernels (`triton_kernels.py`) inside an autograd Function.

Forward: one kernel, saving the output and the base-2 log-sum-exp. Backward: delta = rowsum(dO*O),
then dQ over query tiles (forward index) and dK/dV over key tiles (reverse index, built here in
torch from the forward index). Every tile is written by exactly one program: no atomics, so the
backward is deterministic.

Autotuning: several tile/warp/stage configs on a GPU; exactly one config when interpreted
(TRITON_INTERPRET=1, read when this module is imported because Triton reads it when the kernels
are decorated): the autotuner needs a GPU to time configs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from typing import Any

import torch
import triton
from torch import Tensor

from .index import num_blocks, reverse_block_index
from .triton_kernels import backward_delta_kernel, backward_dkdv_kernel, backward_dq_kernel, forward_kernel

__all__ = ["INTERPRETED", "block_sparse_attention_triton"]

INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

# (query tile, key tile, num_warps, num_stages). Tiles larger than block_size are cut down to it.
_QUERY_MAJOR_TILES = (
    (128, 64, 8, 3),
    (128, 64, 4, 3),
    (64, 64, 4, 3),
    (64, 64, 4, 2),
    (64, 32, 4, 3),
    (128, 32, 4, 2),
)
_KEY_MAJOR_TILES = ((64, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 3), (32, 64, 4, 2), (64, 64, 8, 2))
_DELTA_TILE = 64
_LOG2_E = 1.0 / math.log(2.0)


def _configs(tiles: tuple[tuple[int, int, int, int], ...], block_size: int) -> list[triton.Config]:
    if INTERPRETED:
        tile = min(block_size, 64)
        return [triton.Config({"BLOCK_M": tile, "BLOCK_N": tile}, num_warps=4, num_stages=1)]
    fitted = sorted({(min(m, block_size), min(n, block_size), w, s) for m, n, w, s in tiles}, reverse=True)
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in fitted]


@functools.cache
def _tuned(kernel_name: str, block_size: int) -> Any:
    """One autotuner per (kernel, block size): the candidate tiles must divide the block size."""
    kernel, tiles = {
        "forward": (forward_kernel, _QUERY_MAJOR_TILES),
        "dq": (backward_dq_kernel, _QUERY_MAJOR_TILES),
        "dkdv": (backward_dkdv_kernel, _KEY_MAJOR_TILES),
    }[kernel_name]
    return triton.autotune(configs=_configs(tiles, block_size), key=["HEAD_DIM"])(kernel)


def _strides(x: Tensor) -> tuple[int, int, int]:
    """Batch, sequence and head strides of a [B, L, H, D] tensor (D has unit stride)."""
    return x.stride(0), x.stride(1), x.stride(2)


def _unit_stride_d(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _device_guard(x: Tensor) -> contextlib.AbstractContextManager:
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _kernel_flags(dtype: torch.dtype) -> dict[str, Any]:
    # fp32 dots in IEEE precision (not TF32) so fp32 matches torch's fp32 matmul; the interpreter
    # computes bf16 dots wrongly, so there the kernels upcast bf16 tiles right after loading.
    return {
        "UPCAST": INTERPRETED and dtype == torch.bfloat16,
        "DOT_PRECISION": "ieee" if dtype == torch.float32 else "tf32",
    }


def _forward(
    q: Tensor, k: Tensor, v: Tensor, block_index: Tensor, block_counts: Tensor, kv_valid: Tensor,
    block_size: int, scale: float,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    batch, lq, heads, head_dim = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, lq), dtype=torch.float32, device=q.device)

    def grid(meta: dict[str, Any]) -> tuple[int, int]:
        return (triton.cdiv(lq, meta["BLOCK_M"]), batch * heads)

    with _device_guard(q):
        _tuned("forward", block_size)[grid](
            q, k, v, out, lse, block_index, block_counts, kv_valid,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            heads, lq, num_blocks(lq, block_size), block_index.shape[-1], scale * _LOG2_E,
            BLOCK_SIZE=block_size, HEAD_DIM=head_dim, **_kernel_flags(q.dtype),
        )  # fmt: skip
    return out, lse


def _backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, block_index: Tensor,
    block_counts: Tensor, kv_valid: Tensor, block_size: int, scale: float, need_dq: bool, need_dkv: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # fmt: skip
    batch, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    n_kv_blocks = num_blocks(lk, block_size)
    grad_out = _unit_stride_d(grad_out)
    delta = torch.empty((batch, heads, lq), dtype=torch.float32, device=q.device)
    dq = dk = dv = None
    flags = _kernel_flags(q.dtype)

    def query_grid(meta: dict[str, Any]) -> tuple[int, int]:
        return (triton.cdiv(lq, meta["BLOCK_M"]), batch * heads)

    def key_grid(meta: dict[str, Any]) -> tuple[int, int]:
        return (triton.cdiv(lk, meta["BLOCK_N"]), batch * heads)

    with _device_guard(q):
        backward_delta_kernel[(triton.cdiv(lq, _DELTA_TILE), batch * heads)](
            out, grad_out, delta, *_strides(out), *_strides(grad_out), heads, lq,
            HEAD_DIM=head_dim, BLOCK_M=_DELTA_TILE,
        )  # fmt: skip
    if need_dq:
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        with _device_guard(q):
            _tuned("dq", block_size)[query_grid](
                q, k, v, grad_out, dq, lse, delta, block_index, block_counts, kv_valid,
                *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), *_strides(dq),
                heads, lq, num_blocks(lq, block_size), block_index.shape[-1], scale, scale * _LOG2_E,
                BLOCK_SIZE=block_size, HEAD_DIM=head_dim, **flags,
            )  # fmt: skip
    if need_dkv:
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        query_index, query_counts = reverse_block_index(block_index, block_counts, n_kv_blocks)
        with _device_guard(q):
            _tuned("dkdv", block_size)[key_grid](
                q, k, v, grad_out, dk, dv, lse, delta, query_index, query_counts, kv_valid,
                *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), *_strides(dk), *_strides(dv),
                heads, lq, lk, n_kv_blocks, query_index.shape[-1], scale, scale * _LOG2_E,
                BLOCK_SIZE=block_size, HEAD_DIM=head_dim, **flags,
            )  # fmt: skip
    return dq, dk, dv


class _BlockSparseAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, block_index: Tensor, block_counts: Tensor,
        kv_valid: Tensor, block_size: int, scale: float,
    ) -> Tensor:  # fmt: skip
        q, k, v = _unit_stride_d(q), _unit_stride_d(k), _unit_stride_d(v)
        out, lse = _forward(q, k, v, block_index, block_counts, kv_valid, block_size, scale)
        ctx.save_for_backward(q, k, v, out, lse, block_index, block_counts, kv_valid)
        ctx.block_size = block_size
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse, block_index, block_counts, kv_valid = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        dq, dk, dv = _backward(
            grad_out, q, k, v, out, lse, block_index, block_counts, kv_valid, ctx.block_size, ctx.scale,
            need_dq=need_q, need_dkv=need_k or need_v,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None


def block_sparse_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_index: Tensor,
    block_counts: Tensor,
    *,
    block_size: int,
    kv_valid_lengths: Tensor | None,
    scale: float,
) -> Tensor:
    """Validated inputs (see `block_sparse_attention`) -> [B, Lq, H, D] in q's dtype."""
    if kv_valid_lengths is None:
        kv_valid = torch.full((q.shape[0],), k.shape[1], dtype=torch.int32, device=q.device)
    else:
        kv_valid = kv_valid_lengths
    return _BlockSparseAttentionFunction.apply(
        q, k, v, block_index, block_counts, kv_valid, block_size, scale
    )
