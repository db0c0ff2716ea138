"""Validation of `block_sparse_attention` inputs, and the problem description backends check.

Shapes (see `index.py` for the index format):
    q [B, Lq, H, D], k and v [B, Lk, H, D], block_index [B, H, nQB, C] (int32 or int64),
    block_counts [B, H, nQB] (int), kv_valid_lengths [B] (int) or None,
    with nQB = ceil(Lq / block_size) and nKB = ceil(Lk / block_size).

Value checks (index range, counts range, duplicates, valid lengths) need the data, so they cost
one device-to-host sync; they are skipped while torch.compile traces or when switched off
(`skyreels_attention.value_checks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..value_checks import value_checks_enabled
from .index import num_blocks

__all__ = ["BlockSparseInputs", "BlockSparseProblem", "check_block_values", "validate_block_sparse_inputs"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INDEX_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True, kw_only=True)
class BlockSparseProblem:
    """What a backend needs to know to say whether it can run a call (no tensor data)."""

    batch: int
    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    block_size: int
    n_q_blocks: int
    n_kv_blocks: int
    dtype: torch.dtype
    device: torch.device
    needs_grad: bool


@dataclass(frozen=True, kw_only=True)
class BlockSparseInputs:
    """Validated, normalised inputs: int32 contiguous index tensors and a float scale."""

    q: Tensor
    k: Tensor
    v: Tensor
    block_index: Tensor
    block_counts: Tensor
    kv_valid_lengths: Tensor | None
    scale: float
    problem: BlockSparseProblem


def _require_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_structure(
    q: Tensor, k: Tensor, v: Tensor, block_index: Tensor, block_counts: Tensor, block_size: int
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape [B, L, H, D] (4 dims), got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float16/bfloat16/float32/float64 tensor, got {t.dtype}")
    if k.shape != v.shape:
        raise ValueError(
            f"k and v must have the same shape [B, Lk, H, D], got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    batch, _, heads, head_dim = q.shape
    if (k.shape[0], k.shape[2], k.shape[3]) != (batch, heads, head_dim):
        raise ValueError(
            f"k/v must be [B={batch}, Lk, H={heads}, D={head_dim}] to match q {tuple(q.shape)}, "
            f"got {tuple(k.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if q.shape[1] == 0 or k.shape[1] == 0 or head_dim == 0:
        raise ValueError(f"q and k must have non-empty L and D, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    for name, t in (("k", k), ("v", v), ("block_index", block_index), ("block_counts", block_counts)):
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


def _check_index_shapes(q: Tensor, block_index: Tensor, block_counts: Tensor, block_size: int) -> None:
    batch, lq, heads, _ = q.shape
    nqb = num_blocks(lq, block_size)
    if block_index.dtype not in _INDEX_DTYPES:
        raise TypeError(f"block_index must be an int32 (or int64) tensor, got {block_index.dtype}")
    if block_counts.dtype not in _INDEX_DTYPES:
        raise TypeError(f"block_counts must be an int32 (or int64) tensor, got {block_counts.dtype}")
    if (
        block_index.dim() != 4
        or tuple(block_index.shape[:3]) != (batch, heads, nqb)
        or block_index.shape[3] < 1
    ):
        raise ValueError(
            f"block_index must have shape [B={batch}, H={heads}, nQB={nqb}, C>=1] "
            f"(nQB = ceil(Lq={lq} / block_size={block_size})), got {tuple(block_index.shape)}"
        )
    if tuple(block_counts.shape) != (batch, heads, nqb):
        raise ValueError(
            f"block_counts must have shape [B={batch}, H={heads}, nQB={nqb}], got {tuple(block_counts.shape)}"
        )


def _check_valid_lengths(kv_valid_lengths: Tensor, q: Tensor) -> None:
    if kv_valid_lengths.dtype not in _INDEX_DTYPES:
        raise TypeError(f"kv_valid_lengths must be an int32/int64 tensor, got {kv_valid_lengths.dtype}")
    if tuple(kv_valid_lengths.shape) != (q.shape[0],):
        raise ValueError(
            f"kv_valid_lengths must have shape [B={q.shape[0]}], got {tuple(kv_valid_lengths.shape)}"
        )
    if kv_valid_lengths.device != q.device:
        raise ValueError(f"kv_valid_lengths must be on q's device {q.device}, got {kv_valid_lengths.device}")


def check_block_values(
    block_index: Tensor, block_counts: Tensor, kv_valid_lengths: Tensor | None, n_kv_blocks: int, lk: int
) -> None:
    """All data checks of a block pattern with one host sync; details are computed only when a
    check fails. Shared by `block_sparse_attention` and the dense API's `BlockMask`."""
    width = block_index.shape[-1]
    slots = torch.arange(width, device=block_index.device)
    in_count = slots < block_counts[..., None]
    counts_ok = ((block_counts >= 0) & (block_counts <= min(width, n_kv_blocks))).all()
    range_ok = ((block_index >= -1) & (block_index < n_kv_blocks)).all()
    used_ok = torch.where(in_count, block_index >= 0, True).all()
    # Distinctness: unused slots get distinct negative values, then adjacent equal values = duplicate.
    marked = torch.where(in_count, block_index.long(), -1 - slots)
    ordered = marked.sort(dim=-1).values
    dup_free = (
        (ordered[..., 1:] != ordered[..., :-1]).all() if width > 1 else torch.ones((), dtype=torch.bool)
    )
    flags = [counts_ok, range_ok, used_ok, dup_free]
    if kv_valid_lengths is not None:
        flags.append(((kv_valid_lengths >= 0) & (kv_valid_lengths <= lk)).all())
    results = torch.stack([f.to(block_index.device) for f in flags]).tolist()
    if not results[0]:
        raise ValueError(
            f"block_counts must lie in [0, min(C={width}, nKB={n_kv_blocks})], got values in "
            f"[{int(block_counts.min())}, {int(block_counts.max())}]"
        )
    if not results[1]:
        raise ValueError(
            f"block_index entries must lie in [-1, nKB={n_kv_blocks}) (-1 = padding), got values in "
            f"[{int(block_index.min())}, {int(block_index.max())}]"
        )
    if not results[2]:
        raise ValueError("block_index has -1 padding inside the first block_counts entries of a row")
    if not results[3]:
        raise ValueError(
            "block_index lists the same key block twice in one row (selected blocks must be distinct)"
        )
    if kv_valid_lengths is not None and not results[4]:
        raise ValueError(
            f"kv_valid_lengths must lie in [0, Lk={lk}], got values in "
            f"[{int(kv_valid_lengths.min())}, {int(kv_valid_lengths.max())}]"
        )


def validate_block_sparse_inputs(
    q: object,
    k: object,
    v: object,
    block_index: object,
    block_counts: object,
    *,
    block_size: int,
    kv_valid_lengths: object = None,
    scale: float | None = None,
) -> BlockSparseInputs:
    """Check every argument (raising TypeError/ValueError naming it) and normalise the index dtypes."""
    q, k, v = _require_tensor("q", q), _require_tensor("k", k), _require_tensor("v", v)
    block_index = _require_tensor("block_index", block_index)
    block_counts = _require_tensor("block_counts", block_counts)
    _check_structure(q, k, v, block_index, block_counts, block_size)
    _check_index_shapes(q, block_index, block_counts, block_size)
    lk = k.shape[1]
    if kv_valid_lengths is not None:
        kv_valid_lengths = _require_tensor("kv_valid_lengths", kv_valid_lengths)
        _check_valid_lengths(kv_valid_lengths, q)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float or None, got {scale!r}")
    n_kv_blocks = num_blocks(lk, block_size)
    if value_checks_enabled():
        check_block_values(block_index, block_counts, kv_valid_lengths, n_kv_blocks, lk)
    problem = BlockSparseProblem(
        batch=q.shape[0],
        heads=q.shape[2],
        q_len=q.shape[1],
        kv_len=lk,
        head_dim=q.shape[3],
        block_size=block_size,
        n_q_blocks=num_blocks(q.shape[1], block_size),
        n_kv_blocks=n_kv_blocks,
        dtype=q.dtype,
        device=q.device,
        needs_grad=torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)),
    )
    return BlockSparseInputs(
        q=q,
        k=k,
        v=v,
        block_index=block_index.to(torch.int32).contiguous(),
        block_counts=block_counts.to(torch.int32).contiguous(),
        kv_valid_lengths=None if kv_valid_lengths is None else kv_valid_lengths.to(torch.int32).contiguous(),
        scale=float(scale),
        problem=problem,
    )
