"""`block_sparse_attention`: exact attention restricted to selected (query block, key block) tiles.

This is the fine stage of Video Sparse Attention (paper section 4.5; VSA, arXiv 2505.13389): each
query block attends exactly to the key blocks a coarse stage selected, with the softmax
renormalised over the selection. The op itself is selection-agnostic: it takes the index.
"""

from __future__ import annotations

from torch import Tensor

from .backends import BlockSparseBackendName, resolve_block_sparse_backend
from .inputs import validate_block_sparse_inputs

__all__ = ["block_sparse_attention"]


def block_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_index: Tensor,
    block_counts: Tensor,
    *,
    block_size: int = 64,
    kv_valid_lengths: Tensor | None = None,
    scale: float | None = None,
    backend: BlockSparseBackendName | None = None,
) -> Tensor:
    """Attention of each query block to its selected key blocks only.

    Args:
        q: `[B, Lq, H, D]` queries.
        k, v: `[B, Lk, H, D]` keys and values (same dtype and device as q).
        block_index: `[B, H, nQB, C]` int32 (int64 accepted), nQB = ceil(Lq / block_size). Row
            `(b, h, i)` lists in its first `block_counts[b, h, i]` entries the distinct key blocks
            (0 <= j < nKB = ceil(Lk / block_size)) query block `i` attends to; the rest are
            ignored (pad with -1). Order does not matter.
        block_counts: `[B, H, nQB]` int, each in [0, min(C, nKB)].
        block_size: tokens per block on both axes; the last block of q or k may be partial.
        kv_valid_lengths: `[B]` int or None. Keys at positions >= the valid length are never
            attended (padding inside the last selected block, or whole padded blocks).
        scale: softmax scale; None means 1 / sqrt(D).
        backend: "torch" (fp32 reference, any device), "gather" (gathered blocks + fused SDPA;
            CPU and CUDA, with backward), "cpp" (our C++ CPU kernel, fp32, with backward; built
            on first use), "flex" (compiled flex_attention; no CPU backward), "triton" (our
            kernel; CUDA, or CPU under TRITON_INTERPRET=1), or None: triton, then flex, then
            torch on CUDA; cpp, then gather, then torch on CPU; torch elsewhere.

    Returns:
        `[B, Lq, H, D]` in q's dtype. A query row whose selected keys are all masked (count 0, or
        every selected key past the valid length) is 0, with zero gradients (never NaN).

    Raises:
        TypeError / ValueError naming the bad argument; `BlockSparseBackendError` (a ValueError)
        listing every reason when the requested backend (or, for None, every candidate) cannot run.
    """
    inputs = validate_block_sparse_inputs(
        q,
        k,
        v,
        block_index,
        block_counts,
        block_size=block_size,
        kv_valid_lengths=kv_valid_lengths,
        scale=scale,
    )
    return resolve_block_sparse_backend(inputs.problem, backend).run(inputs)
