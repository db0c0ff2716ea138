"""``TextEmbeddings``: what the shared text encoder (paper 3.1) hands to both branches.

One frozen encoder turns the combined visual + acoustic prompt into token embeddings
``tokens [B, L, D]`` with a right-padded mask ``mask [B, L]`` (True = real token), plus an optional
pooled vector ``pooled [B, P]`` (a CLIP-style summary; only the ``full`` preset consumes one). The
joint transformer takes them as ``text_tokens``, ``text_mask`` and ``pooled_text``.

Padded positions hold zeros, so two embeddings padded to one length compare equal exactly when
their real tokens do.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from skyreels_v4.errors import NonFiniteError

__all__ = ["TextEmbeddings"]


@dataclass(frozen=True, kw_only=True)
class TextEmbeddings:
    """Token embeddings ``[B, L, D]`` (float), right-padded bool mask ``[B, L]``, pooled ``[B, P]`` or None.

    Every row has at least one real token (attention over an all-padding row is undefined).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor | None = None

    def __post_init__(self) -> None:
        tokens, mask, pooled = self.tokens, self.mask, self.pooled
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or not tokens.is_floating_point():
            got = (
                f"{tuple(tokens.shape)} {tokens.dtype}"
                if isinstance(tokens, torch.Tensor)
                else type(tokens).__name__
            )
            raise TypeError(f"tokens: expected a float tensor [B, L, D], got {got}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = f"{mask.dtype} tensor" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask: expected a bool tensor [B, L], got {got}")
        if tuple(mask.shape) != tuple(tokens.shape[:2]):
            raise ValueError(
                f"mask: expected shape {tuple(tokens.shape[:2])} (tokens' [B, L]), got {tuple(mask.shape)}"
            )
        if mask.device != tokens.device:
            raise ValueError(f"mask: expected device {tokens.device} (tokens' device), got {mask.device}")
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"tokens: expected B >= 1 and L >= 1, got shape {tuple(tokens.shape)}")
        lengths = mask.sum(dim=1)
        expected = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
        if not torch.equal(mask, expected):
            raise ValueError("mask: expected right padding (each row: True then False), got a row with a gap")
        if bool((lengths == 0).any()):
            rows = torch.nonzero(lengths == 0).flatten().tolist()
            raise ValueError(f"mask: expected at least one real token per row, rows {rows} have none")
        if pooled is not None:
            if not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or not pooled.is_floating_point():
                got = (
                    f"{tuple(pooled.shape)} {pooled.dtype}"
                    if isinstance(pooled, torch.Tensor)
                    else type(pooled)
                )
                raise TypeError(f"pooled: expected a float tensor [B, P] or None, got {got}")
            if pooled.shape[0] != tokens.shape[0]:
                raise ValueError(
                    f"pooled: expected batch {tokens.shape[0]} (tokens' B), got {pooled.shape[0]}"
                )
            if pooled.device != tokens.device:
                raise ValueError(
                    f"pooled: expected device {tokens.device} (tokens' device), got {pooled.device}"
                )

    # -- shape ---------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        """Padded length ``L``."""
        return int(self.tokens.shape[1])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[2])

    @property
    def lengths(self) -> torch.Tensor:
        """int64 ``[B]``: the number of real tokens of each row."""
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return self.batch_size

    # -- conversions ---------------------------------------------------------------------------

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TextEmbeddings:
        """Move to ``device`` and cast the float tensors to ``dtype`` (the mask stays bool)."""
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
        pooled = None if self.pooled is None else self.pooled.to(device=device, dtype=dtype)
        return TextEmbeddings(
            tokens=self.tokens.to(device=device, dtype=dtype), mask=self.mask.to(device=device), pooled=pooled
        )

    def transformer_kwargs(self) -> dict[str, torch.Tensor | None]:
        """``text_tokens``, ``text_mask`` and ``pooled_text`` for ``JointAudioVideoTransformer.forward``."""
        return {"text_tokens": self.tokens, "text_mask": self.mask, "pooled_text": self.pooled}

    def check_finite(self, what: str) -> TextEmbeddings:
        """Raise ``NonFiniteError`` naming ``what`` and the rows with a NaN/inf real token or pooled value."""
        bad = ~torch.isfinite(self.tokens).all(dim=2) & self.mask
        rows = set(torch.nonzero(bad.any(dim=1)).flatten().tolist())
        if self.pooled is not None:
            rows |= set(torch.nonzero(~torch.isfinite(self.pooled).all(dim=1)).flatten().tolist())
        if rows:
            raise NonFiniteError(f"{what}: embeddings of rows {sorted(rows)} hold NaN or inf values")
        return self

    # -- batching ------------------------------------------------------------------------------

    def pad_to(self, length: int) -> TextEmbeddings:
        """Right-pad (zeros, False) to ``length`` >= the current length."""
        length = operator.index(length)
        if length < self.length:
            raise ValueError(f"length: expected >= {self.length} (the current length), got {length}")
        extra = length - self.length
        if extra == 0:
            return self
        tokens = torch.nn.functional.pad(self.tokens, (0, 0, 0, extra))
        mask = torch.nn.functional.pad(self.mask, (0, extra), value=False)
        return TextEmbeddings(tokens=tokens, mask=mask, pooled=self.pooled)

    def trim(self) -> TextEmbeddings:
        """Drop the padding columns no row needs (length = the longest row)."""
        longest = int(self.lengths.max())
        if longest == self.length:
            return self
        return TextEmbeddings(
            tokens=self.tokens[:, :longest], mask=self.mask[:, :longest], pooled=self.pooled
        )

    def cat(self, *others: TextEmbeddings) -> TextEmbeddings:
        """Concatenate along the batch, padding to the longest length (e.g. cond + uncond for CFG)."""
        return TextEmbeddings.concat([self, *others])

    @staticmethod
    def concat(parts: Sequence[TextEmbeddings]) -> TextEmbeddings:
        """Concatenate ``parts`` along the batch; they must share D, dtype, device and pooled width."""
        parts = list(parts)
        if not parts:
            raise ValueError("parts: expected at least one TextEmbeddings, got none")
        for i, part in enumerate(parts):
            if not isinstance(part, TextEmbeddings):
                raise TypeError(f"parts[{i}]: expected TextEmbeddings, got {type(part).__name__}")
        first = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            if part.dim != first.dim:
                raise ValueError(f"parts[{i}]: expected token dim {first.dim}, got {part.dim}")
            if part.tokens.dtype != first.tokens.dtype or part.tokens.device != first.tokens.device:
                raise ValueError(
                    f"parts[{i}]: expected {first.tokens.dtype} on {first.tokens.device}, "
                    f"got {part.tokens.dtype} on {part.tokens.device}"
                )
            if (part.pooled is None) != (first.pooled is None):
                raise ValueError(
                    f"parts[{i}]: expected pooled {'absent' if first.pooled is None else 'present'}"
                )
            if (
                part.pooled is not None
                and first.pooled is not None
                and part.pooled.shape[1] != first.pooled.shape[1]
            ):
                raise ValueError(
                    f"parts[{i}]: expected pooled dim {first.pooled.shape[1]}, got {part.pooled.shape[1]}"
                )
        length = max(part.length for part in parts)
        padded = [part.pad_to(length) for part in parts]
        pooled = None if first.pooled is None else torch.cat([p.pooled for p in padded], dim=0)  # type: ignore[misc]
        return TextEmbeddings(
            tokens=torch.cat([p.tokens for p in padded], dim=0),
            mask=torch.cat([p.mask for p in padded], dim=0),
            pooled=pooled,
        )

    def index(self, i: int) -> TextEmbeddings:
        """Row ``i`` (negative counts from the end) as a batch of one, keeping the padded length."""
        if isinstance(i, bool):
            raise TypeError("i: expected an int, got bool")
        i = operator.index(i)
        if not -self.batch_size <= i < self.batch_size:
            raise IndexError(f"i: expected -{self.batch_size} <= i < {self.batch_size}, got {i}")
        sl = slice(i, i + 1 if i != -1 else None)
        pooled = None if self.pooled is None else self.pooled[sl]
        return TextEmbeddings(tokens=self.tokens[sl], mask=self.mask[sl], pooled=pooled)

    def repeat(self, times: int) -> TextEmbeddings:
        """Each row ``times`` times (``[a, b] -> [a, a, b, b]``), e.g. one negative prompt per sample."""
        times = operator.index(times)
        if times < 1:
            raise ValueError(f"times: expected >= 1, got {times}")
        pooled = None if self.pooled is None else self.pooled.repeat_interleave(times, dim=0)
        return TextEmbeddings(
            tokens=self.tokens.repeat_interleave(times, dim=0),
            mask=self.mask.repeat_interleave(times, dim=0),
            pooled=pooled,
        )

    def equal(self, other: TextEmbeddings) -> bool:
        """Bit-exact equality of the real tokens, masks and pooled vectors (padding ignored)."""
        if not isinstance(other, TextEmbeddings) or other.batch_size != self.batch_size:
            return False
        a, b = self.trim(), other.trim()
        if a.length != b.length or not torch.equal(a.mask, b.mask) or a.dim != b.dim:
            return False
        same_tokens = torch.equal(a.tokens * a.mask[..., None], b.tokens * b.mask[..., None])
        if (a.pooled is None) != (b.pooled is None):
            return False
        return same_tokens and (a.pooled is None or torch.equal(a.pooled, b.pooled))  # type: ignore[arg-type]
