"""Image stages of paper 3.4.2: scan, basic quality (resolution, aspect, IQA hook), exact and
near-duplicate removal, and embedding-cluster balancing for pretraining (k-means on embeddings,
each cluster capped to an equal share). Category matching against captions is ``balance``."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyreels_v4.data.dedup import decode_embedding, hamming, phash_hex
from skyreels_v4.data.manifest import Row, new_row
from skyreels_v4.data.stage import (
    Drop,
    StageContext,
    StageKind,
    StageResult,
    drop_row,
    load_hook,
    register_stage,
    require_columns,
)
from skyreels_v4.data.video_stages import clip_id_for
from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClusterBalanceConfig",
    "ImageDedupConfig",
    "ImageQualityConfig",
    "ImageScanConfig",
    "kmeans",
    "read_image",
]


def read_image(path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise FileFormatError(path, f"not a readable image ({error})") from error


@dataclass(frozen=True, kw_only=True)
class ImageScanConfig:
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS


@register_stage("scan_images", StageKind.SOURCE, ImageScanConfig)
def scan_images(config: ImageScanConfig, context: StageContext) -> list[Row]:
    extensions = {e.lower() for e in config.extensions}
    return [
        new_row(
            id=clip_id_for(p.relative_to(context.input_dir).as_posix()),
            source=p.relative_to(context.input_dir).as_posix(),
            start_s=0.0,
            end_s=0.0,
        )
        for p in sorted(context.input_dir.rglob("*"))
        if p.is_file() and p.suffix.lower() in extensions
    ]


@dataclass(frozen=True, kw_only=True)
class ImageQualityConfig:
    min_short_side: int = 64
    min_aspect: float = 0.33
    max_aspect: float = 3.0
    iqa: Any = None  # an ImageQualityScorer hook; None: no IQA score
    min_iqa: float = 0.0
    embedder: Any = "skyreels_v4.data.hooks:ThumbnailEmbedder"


@register_stage("image_quality", StageKind.MAP, ImageQualityConfig)
def image_quality(row: Row, config: ImageQualityConfig, context: StageContext) -> StageResult:
    """Measures size, aspect, pixel digest (exact duplicates), pHash, embedding and IQA.

    An unreadable file is dropped (``unreadable: ...``) rather than stopping the run."""
    try:
        image = read_image(context.source_path(row["source"]))
    except FileFormatError as error:
        raise Drop(f"unreadable: {error.problem}") from error
    height, width = image.shape[:2]
    vector = np.asarray(load_hook(config.embedder).embed(image[None]), np.float32).reshape(-1)
    if vector.size == 0 or not np.isfinite(vector).all():
        raise NonFiniteError(
            f"stage 'image_quality': embedder {config.embedder!r} gave a non-finite or empty embedding "
            f"for clip {row['id']!r}"
        )
    values: dict[str, Any] = {
        "width": width,
        "height": height,
        "aspect": width / height,
        "pixel_sha256": hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest(),
        "phash": phash_hex(image),
        "embedding": base64.b64encode(vector.tobytes()).decode("ascii"),
    }
    if config.iqa is not None:
        values["iqa"] = float(load_hook(config.iqa).score(image))
    for ok, reason in [
        (min(width, height) >= config.min_short_side, f"short_side<{config.min_short_side}"),
        (config.min_aspect <= values["aspect"] <= config.max_aspect, "aspect"),
        (values.get("iqa", config.min_iqa) >= config.min_iqa, f"iqa<{config.min_iqa:g}"),
    ]:
        if not ok:
            return StageResult(values=values, drop=reason)
    return StageResult(values=values)


@dataclass(frozen=True, kw_only=True)
class ImageDedupConfig:
    max_hamming: float = 6.0


@register_stage("image_dedup", StageKind.TABLE, ImageDedupConfig)
def image_dedup(rows: list[Row], config: ImageDedupConfig, context: StageContext) -> list[Row]:
    """Exact duplicates (same decoded pixels) first, then near duplicates by pHash distance."""
    require_columns(
        rows, ("width", "height", "pixel_sha256", "phash"), stage="image_dedup", producer="image_quality"
    )
    ordered = sorted(rows, key=lambda r: (-r["width"] * r["height"], r["id"]))
    kept: list[Row] = []
    out = []
    for row in ordered:
        exact = next((k for k in kept if k["pixel_sha256"] == row["pixel_sha256"]), None)
        near = exact or next(
            (k for k in kept if hamming(k["phash"], row["phash"]) <= config.max_hamming), None
        )
        if near is None:
            kept.append(row)
            out.append(row)
        else:
            out.append(
                drop_row(row, "image_dedup", f"{'exact' if exact else 'near'}_duplicate_of:{near['id']}")
            )
    return out


def kmeans(points: np.ndarray, k: int, *, iterations: int = 50, seed: int = 0) -> np.ndarray:
    """Cluster index per point ``[N]`` (Lloyd's algorithm, k-means++ start, deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(points))
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d = np.min(((points[:, None] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(points[rng.choice(len(points), p=d / d.sum())] if d.sum() > 0 else points[0])
    centres = np.asarray(centres)
    for _ in range(iterations):
        labels = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        new = np.array([points[labels == c].mean(0) if (labels == c).any() else centres[c] for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return labels


@dataclass(frozen=True, kw_only=True)
class ClusterBalanceConfig:
    num_clusters: int = 8
    seed: int = 0


@register_stage("cluster_balance", StageKind.TABLE, ClusterBalanceConfig)
def cluster_balance(rows: list[Row], config: ClusterBalanceConfig, context: StageContext) -> list[Row]:
    """Pretraining balance: every cluster keeps at most as many images as the smallest non-empty one."""
    if not rows:
        return rows
    require_columns(rows, ("embedding",), stage="cluster_balance", producer="image_quality")
    vectors = [decode_embedding(r, "cluster_balance") for r in rows]
    sizes = sorted({v.size for v in vectors})
    if len(sizes) > 1:
        raise SkyReelsError(f"stage 'cluster_balance': expected one embedding size, got sizes {sizes}")
    points = np.stack(vectors)
    labels = kmeans(points.astype(np.float64), config.num_clusters, seed=config.seed)
    quota = min(np.bincount(labels)[np.bincount(labels) > 0])
    out = []
    for c in sorted(set(labels.tolist())):
        members = sorted(
            (r for r, lab in zip(rows, labels, strict=True) if lab == c),
            key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest(),
        )
        out += [{**r, "cluster": int(c)} for r in members[:quota]]
        out += [
            drop_row({**r, "cluster": int(c)}, "cluster_balance", f"over_cluster_share:{c}")
            for r in members[quota:]
        ]
    return out
