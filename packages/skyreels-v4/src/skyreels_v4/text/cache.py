"""``PromptEmbeddingCache``: memoised text embeddings (paper 3.1's encoder is frozen, so a prompt's
embedding never changes; sampling with guidance re-encodes the same negative prompt every call, and
training re-encodes the same captions every epoch).

Entries are keyed by (encoder identity, its dtype and device, prompt text, SHA-256 digests of that
prompt's reference images and videos), kept per prompt (trimmed to its own length) and evicted in
least-recently-used order. A request is answered from the cache where possible; the misses are
encoded together in one batch.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import torch

from skyreels_v4.errors import SkyReelsError
from skyreels_v4.text.base import TextEncoder
from skyreels_v4.text.embeddings import TextEmbeddings
from skyreels_v4.text.validation import check_prompts, check_references

__all__ = ["PromptEmbeddingCache", "reference_digest"]

_Key = tuple[str, str, str, str, tuple[str, ...], tuple[str, ...]]


def reference_digest(tensor: torch.Tensor) -> str:
    """SHA-256 over a tensor's dtype, shape and bytes (any device or dtype, bf16 included)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor: expected a torch.Tensor, got {type(tensor).__name__}")
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{data.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class PromptEmbeddingCache:
    """An LRU of per-prompt ``TextEmbeddings`` with hit / miss counters (counted per prompt)."""

    def __init__(self, capacity: int = 1024) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity: expected a positive int, got {capacity!r}")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[_Key, TextEmbeddings] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self._entries.clear()
        self.hits = self.misses = 0

    @staticmethod
    def key(
        encoder: TextEncoder,
        prompt: str,
        images: Sequence[torch.Tensor] = (),
        videos: Sequence[torch.Tensor] = (),
    ) -> _Key:
        """The cache key of one prompt with its references."""
        return (
            encoder.identity,
            str(encoder.dtype),
            str(encoder.device),
            prompt,
            tuple(reference_digest(t) for t in images),
            tuple(reference_digest(t) for t in videos),
        )

    def encode_cached(
        self,
        encoder: TextEncoder,
        prompts: Sequence[str],
        *,
        images: Sequence[Sequence[torch.Tensor]] | None = None,
        videos: Sequence[Sequence[torch.Tensor]] | None = None,
    ) -> TextEmbeddings:
        """``encoder.encode(prompts, images=images, videos=videos)``, reusing cached prompts.

        The result is padded to its longest prompt. Refuses a trainable encoder (its embeddings change
        as it trains, so cached ones would go stale).
        """
        if not isinstance(encoder, TextEncoder):
            raise TypeError(f"encoder: expected a TextEncoder, got {type(encoder).__name__}")
        if not encoder.frozen:
            raise SkyReelsError(
                f"encoder: expected a frozen {type(encoder).__name__}, got one whose parameters require grad "
                "(cached embeddings would go stale); call encoder.freeze() or encode without the cache"
            )
        prompt_list = check_prompts(prompts)
        batch = len(prompt_list)
        image_lists = check_references(images, name="images", batch=batch, ndim=3) or [
            [] for _ in prompt_list
        ]
        video_lists = check_references(videos, name="videos", batch=batch, ndim=4) or [
            [] for _ in prompt_list
        ]
        keys = [self.key(encoder, p, im, vi) for p, im, vi in zip(prompt_list, image_lists, video_lists)]

        found: dict[_Key, TextEmbeddings] = {}
        missing: list[int] = []
        for i, key in enumerate(keys):
            if key in found:
                continue
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                found[key] = entry
            elif all(keys[j] != key for j in missing):
                missing.append(i)
        self.hits += sum(1 for key in keys if key in found)
        self.misses += batch - sum(1 for key in keys if key in found)

        if missing:
            fresh = encoder.encode(
                [prompt_list[i] for i in missing],
                images=[image_lists[i] for i in missing] if any(image_lists) else None,
                videos=[video_lists[i] for i in missing] if any(video_lists) else None,
            )
            for row, i in enumerate(missing):
                entry = fresh.index(row).trim()
                entry = TextEmbeddings(
                    tokens=entry.tokens.detach().clone(),
                    mask=entry.mask.clone(),
                    pooled=None if entry.pooled is None else entry.pooled.detach().clone(),
                )
                found[keys[i]] = entry
                self._entries[keys[i]] = entry
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return TextEmbeddings.concat([found[key] for key in keys])
