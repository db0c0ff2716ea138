"""The `flex` backend: torch.compile'd `flex_attention` with a `BlockMask` built from the index.

The block mask lists, per query block, the selected key blocks in two groups: "full" blocks whose
keys are all valid (no per-element mask needed) and "partial" blocks that cross a key valid length
or the end of the sequence (the `mask_mod` decides per key). The `mask_mod` also encodes the block
selection itself, so the result would stay correct even in eager mode, where flex ignores the
block indices and applies only the `mask_mod` (but builds the whole score matrix: `run_compiled`
makes torch.compile raise rather than fall back to it).

Facts this relies on (torch 2.13): compiled flex runs forward on CPU (first compile ~9 s, ~3 s per
new shape, a new mask of the same shape does not recompile) but has no CPU backward; rows with no
attended key come out as 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from ..compiled_flex import run_compiled
from .index import ordered_blocks, selection_table

__all__ = ["block_sparse_attention_flex", "flex_import_error"]


@torch.compiler.assume_constant_result  # a constant for torch.compile (no tracing of the import)
def flex_import_error() -> str | None:
    """None when flex attention imports, else why not (printed by the status report)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except Exception as exc:  # ImportError on old torch, or anything raised at import
        return f"{type(exc).__name__}: {exc}"
    return None


def _flex_block_sparse(q: Tensor, k: Tensor, v: Tensor, block_mask, scale: float, kernel_options):
    """Our own code object around flex_attention, so that its compile cache (and recompile limit)
    is not shared with the dense flex backend or a user's compiled flex_attention."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=block_mask, scale=scale, kernel_options=kernel_options)


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    """One compiled flex callable per process (compiling is the slow part)."""
    return torch.compile(_flex_block_sparse, dynamic=False)


def block_sparse_attention_flex(
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
    from torch.nn.attention.flex_attention import BlockMask

    batch, lq, _, _ = q.shape
    lk = k.shape[1]
    n_kv_blocks = -(-lk // block_size)
    selected = selection_table(block_index, block_counts, n_kv_blocks)  # [B, H, nQB, nKB]
    valid = kv_valid_lengths if kv_valid_lengths is not None else torch.full((batch,), lk, device=q.device)
    valid = valid.to(torch.int32)

    # 1. Split the selection into whole-valid blocks and blocks that need the per-key mask.
    block_end = (torch.arange(n_kv_blocks, device=q.device) + 1) * block_size
    whole = (block_end[None, :] <= valid[:, None])[:, None, None, :]  # [B, 1, 1, nKB]
    # from_kv_blocks transposes with the index width as the number of key blocks: use width nKB.
    partial_index, partial_counts = ordered_blocks(selected & ~whole, width=n_kv_blocks)
    full_index, full_counts = ordered_blocks(selected & whole, width=n_kv_blocks)

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return selected[b, h, q_idx // block_size, kv_idx // block_size] & (kv_idx < valid[b])

    block_mask = BlockMask.from_kv_blocks(
        partial_counts,
        partial_index.clamp_min(0),
        full_counts,
        full_index.clamp_min(0),
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod,
        seq_lengths=(lq, lk),
    )
    # 2. On CUDA the default forward tiles can exceed the block size (flex requires the block
    #    size to be a multiple of its tile), so ask for tiles that divide it. "fwd_" keys apply to
    #    the forward kernel only (unprefixed keys would constrain the backward's tiles too).
    kernel_options = None
    if q.device.type == "cuda":
        tile = min(block_size, 64)
        kernel_options = {"fwd_BLOCK_M": tile, "fwd_BLOCK_N": tile}
    q_t, k_t, v_t = (x.transpose(1, 2) for x in (q, k, v))
    out = run_compiled(_compiled_flex(), q_t, k_t, v_t, block_mask, scale, kernel_options)
    return out.transpose(1, 2).to(q.dtype)
