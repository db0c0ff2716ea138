"""Deduplication of paper 3.4.2: fingerprints per clip (MAP), then one pass over the table (TABLE).

``fingerprint`` stores perceptual hashes (imagehash pHash, 64 bits) of frames at 25/50/75 % of the
clip as hex, or, with ``method: embedding``, a unit embedding from a :class:`ClipEmbedder` hook
(VideoCLIP in the paper; weight-free default :class:`ThumbnailEmbedder`) as base64 float32.
``dedup`` marks a clip a duplicate of an earlier kept one when the mean Hamming distance of its
hashes is <= ``max_hamming`` (or the cosine similarity >= ``min_cosine``). Of a duplicate group
the longest, then highest-resolution, then first-by-id clip is kept. The pairwise pass is
O(n^2) with numpy bit counts; shard by source or use an ANN index for millions of clips.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyreels_v4.data.manifest import Row
from skyreels_v4.data.media import read_frames
from skyreels_v4.data.stage import StageContext, StageKind, StageResult, drop_row, load_hook, register_stage
from skyreels_v4.errors import NonFiniteError, SkyReelsError

__all__ = [
    "DedupConfig",
    "FingerprintConfig",
    "FingerprintMethod",
    "decode_embedding",
    "hamming",
    "phash_hex",
]


class FingerprintMethod(enum.Enum):
    PHASH = "phash"
    EMBEDDING = "embedding"


@dataclass(frozen=True, kw_only=True)
class FingerprintConfig:
    method: str = FingerprintMethod.PHASH.value
    positions: tuple[float, ...] = (0.25, 0.5, 0.75)
    embedder: Any = "skyreels_v4.data.hooks:ThumbnailEmbedder"

    def __post_init__(self) -> None:
        FingerprintMethod(self.method)


def phash_hex(rgb: np.ndarray) -> str:
    """64-bit perceptual hash of an RGB image ``[H, W, 3]`` uint8, as 16 hex digits."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(rgb)))


def hamming(a: str, b: str) -> float:
    """Mean Hamming distance between two comma-separated lists of hex hashes (same length)."""
    xs, ys = a.split(","), b.split(",")
    if len(xs) != len(ys):
        raise ValueError(f"hashes: expected equally many per clip, got {len(xs)} and {len(ys)}")
    return float(np.mean([bin(int(x, 16) ^ int(y, 16)).count("1") for x, y in zip(xs, ys, strict=True)]))


def _pick(frames: np.ndarray, positions: tuple[float, ...]) -> np.ndarray:
    return frames[[min(len(frames) - 1, int(p * len(frames))) for p in positions]]


@register_stage("fingerprint", StageKind.MAP, FingerprintConfig)
def fingerprint(row: Row, config: FingerprintConfig, context: StageContext) -> StageResult:
    frames = read_frames(context.source_path(row["source"]), row["start_s"], row["end_s"], gray=False)
    if FingerprintMethod(config.method) is FingerprintMethod.PHASH:
        return StageResult(values={"phash": ",".join(phash_hex(f) for f in _pick(frames, config.positions))})
    vector = np.asarray(load_hook(config.embedder).embed(frames), dtype=np.float32).reshape(-1)
    if vector.size == 0 or not np.isfinite(vector).all():
        raise NonFiniteError(
            f"stage 'fingerprint': embedder {config.embedder!r} gave a non-finite or empty embedding "
            f"for clip {row['id']!r}"
        )
    return StageResult(values={"embedding": base64.b64encode(vector.tobytes()).decode("ascii")})


def decode_embedding(row: Row, stage: str) -> np.ndarray:
    """The float32 vector stored base64 in ``row["embedding"]``; a bad or non-finite one raises."""
    try:
        vector = np.frombuffer(base64.b64decode(row["embedding"], validate=True), np.float32)
    except (ValueError, TypeError) as error:
        raise SkyReelsError(
            f"stage {stage!r}: column 'embedding' of clip {row['id']!r}: expected base64 float32 ({error})"
        ) from error
    if vector.size == 0 or not np.isfinite(vector).all():
        raise NonFiniteError(
            f"stage {stage!r}: column 'embedding' of clip {row['id']!r} is empty or non-finite"
        )
    return vector


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    max_hamming: float = 10.0
    min_cosine: float = 0.95


def _priority(row: Row) -> tuple:
    return (
        -(row["end_s"] - row["start_s"]),
        -int(row.get("width", 0)) * int(row.get("height", 0)),
        row["id"],
    )


@register_stage("dedup", StageKind.TABLE, DedupConfig)
def dedup(rows: list[Row], config: DedupConfig, context: StageContext) -> list[Row]:
    """Drop every clip that duplicates a kept clip of higher priority (see module docstring)."""
    for row in rows:
        if row.get("phash") is None and row.get("embedding") is None:
            raise SkyReelsError(
                f"stage 'dedup': clip {row['id']!r} has no column 'phash' or 'embedding'; "
                "expected stage 'fingerprint' to run before it in the pipeline"
            )
    ordered = sorted(rows, key=_priority)
    kept: list[Row] = []
    out = []
    for row in ordered:
        twin = None
        for other in kept:
            if "phash" in row and "phash" in other:
                if hamming(row["phash"], other["phash"]) <= config.max_hamming:
                    twin = other
            elif "embedding" in row and "embedding" in other:
                a, b = decode_embedding(row, "dedup"), decode_embedding(other, "dedup")
                if a.shape != b.shape:
                    raise SkyReelsError(
                        f"stage 'dedup': embeddings of {row['id']!r} and {other['id']!r} differ in size "
                        f"({a.size} vs {b.size}); fingerprint every clip with the same embedder"
                    )
                if float(a @ b) >= config.min_cosine:
                    twin = other
            if twin is not None:
                break
        if twin is None:
            kept.append(row)
            out.append(row)
        else:
            out.append({**drop_row(row, "dedup", f"duplicate_of:{twin['id']}"), "duplicate_of": twin["id"]})
    return out
