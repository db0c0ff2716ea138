"""Typed attention masks.

Every mask answers two questions the dispatcher needs: which `MaskKind` it is (backends declare
the kinds they support as data) and how to become a dense boolean `[B, H, Lq, Lk]` mask (the
fallback every dense backend can use, and the ground truth the tests compare against).

Semantics shared by all kinds: `True` / finite means the query may attend to the key. A query
row that can attend to no key at all returns zeros (not NaN) from every backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import Tensor

from .value_checks import value_checks_enabled

__all__ = ["AttentionMask", "BlockMask", "DenseMask", "KeyPaddingMask", "MaskKind", "mask_kind"]


class MaskKind(enum.Enum):
    NONE = "none"
    KEY_PADDING = "key_padding"
    DENSE_BOOL = "dense_bool"
    DENSE_ADDITIVE = "dense_additive"
    BLOCK = "block"


@dataclass(frozen=True)
class KeyPaddingMask:
    """Keys `j >= valid_lengths[b]` of sample `b` are padding and never attended.

    valid_lengths: integer tensor `[B]`, each in `[0, Lk]`.
    """

    valid_lengths: Tensor

    def __post_init__(self) -> None:
        vl = self.valid_lengths
        if not isinstance(vl, Tensor) or vl.ndim != 1 or vl.is_floating_point() or vl.is_complex():
            got = f"{type(vl).__name__} {getattr(vl, 'dtype', '')} {tuple(getattr(vl, 'shape', ()))}"
            raise TypeError(f"KeyPaddingMask.valid_lengths: expected a 1-D integer tensor [B], got {got}")

    @property
    def kind(self) -> MaskKind:
        return MaskKind.KEY_PADDING

    def validate(self, batch: int, lq: int, lk: int) -> None:
        vl = self.valid_lengths
        if vl.shape[0] != batch:
            raise ValueError(
                f"KeyPaddingMask.valid_lengths: expected {batch} entries (batch), got {vl.shape[0]}"
            )
        if value_checks_enabled() and bool(((vl < 0) | (vl > lk)).any()):
            raise ValueError(
                f"KeyPaddingMask.valid_lengths: expected values in [0, Lk={lk}], got {vl.tolist()}"
            )

    def to_dense(self, batch: int, heads: int, lq: int, lk: int, device: torch.device) -> Tensor:
        """Boolean `[B, 1, 1, Lk]` (broadcastable to `[B, H, Lq, Lk]`), True = attend."""
        keys = torch.arange(lk, device=device)
        return (keys[None, :] < self.valid_lengths.to(device)[:, None])[:, None, None, :]


@dataclass(frozen=True)
class DenseMask:
    """A dense mask broadcastable to `[B, H, Lq, Lk]`.

    Boolean: True = attend. Floating: an additive bias on the logits (use -inf or a large negative
    number to block a key). 2-D `[Lq, Lk]` and 3-D `[B, Lq, Lk]` masks are accepted and treated
    as `[1, 1, Lq, Lk]` and `[B, 1, Lq, Lk]`.
    """

    mask: Tensor

    def __post_init__(self) -> None:
        m = self.mask
        if not isinstance(m, Tensor) or not (m.dtype == torch.bool or m.is_floating_point()):
            got = f"{type(m).__name__} {getattr(m, 'dtype', '')}"
            raise TypeError(f"DenseMask.mask: expected a bool or floating tensor, got {got}")
        if m.ndim not in (2, 3, 4):
            raise ValueError(f"DenseMask.mask: expected 2, 3 or 4 dims, got shape {tuple(m.shape)}")

    @property
    def kind(self) -> MaskKind:
        return MaskKind.DENSE_BOOL if self.mask.dtype == torch.bool else MaskKind.DENSE_ADDITIVE

    @property
    def mask_4d(self) -> Tensor:
        m = self.mask
        if m.ndim == 2:
            return m[None, None]
        if m.ndim == 3:
            return m[:, None]
        return m

    def validate(self, batch: int, heads: int, lq: int, lk: int) -> None:
        target = (batch, heads, lq, lk)
        shape = tuple(self.mask_4d.shape)
        if any(s not in (1, t) for s, t in zip(shape, target)):
            raise ValueError(
                f"DenseMask.mask: expected a shape broadcastable to [B, H, Lq, Lk] = {list(target)}, "
                f"got {list(self.mask.shape)}"
            )

    def to_dense(self, batch: int, heads: int, lq: int, lk: int, device: torch.device) -> Tensor:
        m = self.mask_4d.to(device)
        return m if m.dtype == torch.bool else m > float("-inf")

    def additive(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The mask as an additive bias in `dtype` (bool masks become 0 / -inf)."""
        m = self.mask_4d.to(device)
        if m.dtype == torch.bool:
            return torch.zeros((), dtype=dtype, device=device).masked_fill(~m, float("-inf"))
        return m.to(dtype)


@dataclass(frozen=True)
class BlockMask:
    """Block-sparse pattern in the format of `block_sparse_attention`.

    Query block `i` of sample `b`, head `h` attends only to the key blocks
    `block_index[b, h, i, :block_counts[b, h, i]]` (int32, padded with -1); keys at or beyond
    `kv_valid_lengths[b]` are never attended.
    """

    block_index: Tensor
    block_counts: Tensor
    block_size: int = 64
    kv_valid_lengths: Tensor | None = None

    def __post_init__(self) -> None:
        bs = self.block_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ValueError(f"BlockMask.block_size: expected a positive int, got {bs!r}")
        for name in ("block_index", "block_counts", "kv_valid_lengths"):
            value = getattr(self, name)
            if value is None and name == "kv_valid_lengths":
                continue
            if (
                not isinstance(value, Tensor)
                or value.is_floating_point()
                or value.is_complex()
                or (value.dtype == torch.bool)
            ):
                got = f"{type(value).__name__} {getattr(value, 'dtype', '')}"
                raise TypeError(f"BlockMask.{name}: expected an integer tensor, got {got}")

    @property
    def kind(self) -> MaskKind:
        return MaskKind.BLOCK

    def validate(self, batch: int, heads: int, lq: int, lk: int) -> None:
        n_q = -(-lq // self.block_size)
        expected = (batch, heads, n_q)
        if tuple(self.block_index.shape[:3]) != expected or self.block_index.ndim != 4:
            raise ValueError(
                f"BlockMask.block_index: expected [B, H, n_query_blocks, max_blocks] with leading dims "
                f"{list(expected)}, got {list(self.block_index.shape)}"
            )
        if tuple(self.block_counts.shape) != expected:
            raise ValueError(
                f"BlockMask.block_counts: expected shape {list(expected)}, "
                f"got {list(self.block_counts.shape)}"
            )
        valid = self.kv_valid_lengths
        if valid is not None and tuple(valid.shape) != (batch,):
            raise ValueError(
                f"BlockMask.kv_valid_lengths: expected shape [B] = [{batch}], got {list(valid.shape)}"
            )
        if value_checks_enabled():
            # The block-sparse op's own value checks (ranges, -1 inside the count, duplicates), so
            # a pattern means the same on every backend. Imported here: block_sparse imports us.
            from .block_sparse.inputs import check_block_values

            check_block_values(self.block_index, self.block_counts, valid, -(-lk // self.block_size), lk)

    def to_dense(self, batch: int, heads: int, lq: int, lk: int, device: torch.device) -> Tensor:
        bs = self.block_size
        n_k = -(-lk // bs)
        idx = self.block_index.to(device).long()
        slots = torch.arange(idx.shape[-1], device=device)
        used = slots < self.block_counts.to(device).long()[..., None]
        blocks = torch.zeros(*idx.shape[:3], n_k + 1, dtype=torch.bool, device=device)
        # Unused slots (-1 padding) are routed to a spare column that is dropped afterwards.
        blocks.scatter_(-1, torch.where(used & (idx >= 0), idx, n_k), True)
        blocks = blocks[..., :n_k]
        dense = blocks.repeat_interleave(bs, dim=2).repeat_interleave(bs, dim=3)[:, :, :lq, :lk]
        if self.kv_valid_lengths is not None:
            keys = torch.arange(lk, device=device)
            valid = keys[None, :] < self.kv_valid_lengths.to(device)[:, None]
            dense = dense & valid[:, None, None, :]
        return dense


AttentionMask = KeyPaddingMask | DenseMask | BlockMask


def mask_kind(mask: AttentionMask | None) -> MaskKind:
    if mask is None:
        return MaskKind.NONE
    if isinstance(mask, KeyPaddingMask | DenseMask | BlockMask):
        return mask.kind
    raise TypeError(f"mask: expected None, KeyPaddingMask, DenseMask or BlockMask, got {type(mask).__name__}")
