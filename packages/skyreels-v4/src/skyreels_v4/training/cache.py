"""The latent cache (paper 4: training on precomputed latents): clips -> video/audio latents and text
embeddings, stored once as safetensors shards with an index, so training never runs a VAE or the
text encoder.

Sources: the procedural world (:func:`world_samples`) or a folder of clips with ``captions.jsonl``
(:func:`folder_samples`; one JSON object per line: ``{"id", "video": "clips/a.mp4", "caption",
"start_s", "end_s", "audio"?}``, the data pipeline's export format). Clips are grouped into buckets of
equal size ``(frames, height, width)`` so that a batch never mixes shapes.

Layout::

    cache_index.json        format, codec/encoder configs, buckets, items (id, caption, labels, where)
    components/{video_vae, audio_vae, text_encoder}/  the components that made it (for export)
    empty_prompt.safetensors  the text encoder's embedding of "" (the CFG / text-dropout negative)
    black_latent.safetensors  the video codec's latent of one black frame per frame size (eq. 7)
    shard-00000.safetensors ... per bucket: video_latents [N, C, T, h, w], audio_latents [N, Ca, La],
                            text_tokens [N, L, D], text_mask [N, L]

Shards and the index are written atomically and the index last, so an interrupted build leaves no
index (a rebuild starts over) and a finished cache is never half-visible.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from skyreels_v4.errors import FileFormatError, NonFiniteError, PreflightError, SkyReelsError
from skyreels_v4.io import atomic_write_json, read_json, read_safetensors, save_safetensors

__all__ = [
    "CACHE_INDEX",
    "CacheSample",
    "LatentCache",
    "build_latent_cache",
    "folder_samples",
    "world_samples",
]

CACHE_INDEX = "cache_index.json"
CACHE_FORMAT = "skyreels-v4-latent-cache"
CACHE_VERSION = 1


@dataclass(frozen=True, kw_only=True, eq=False)
class CacheSample:
    """One clip to cache: pixels ``[3, F, H, W]`` in [-1, 1], waveform ``[channels, samples]``."""

    id: str
    video: Tensor
    audio: Tensor
    sample_rate: int
    fps: float
    caption: str
    labels: dict[str, Any] = field(default_factory=dict)


def world_samples(world: Any, *, length: int, seed: int, split: Any = "train") -> Iterator[CacheSample]:
    """Clips of the procedural world (``skyreels_v4.world``) with their captions and attribute labels."""
    from skyreels_v4.world import ProceduralAVDataset, WorldSplit

    data = ProceduralAVDataset(world, length=length, seed=seed, split=WorldSplit(split))
    for index in range(length):
        item = data[index]
        labels = {
            key: item[key].tolist()
            for key in ("colour_ids", "shape_ids", "background_id", "num_objects", "has_bgm")
        }
        yield CacheSample(
            id=f"world-{WorldSplit(split).value}-{seed}-{index}",
            video=item["video"],
            audio=item["audio"],
            sample_rate=world.sample_rate,
            fps=world.fps,
            caption=item["caption"],
            labels=labels,
        )


def folder_samples(folder: str | os.PathLike[str], *, num_frames: int | None = None) -> Iterator[CacheSample]:
    """Clips listed in ``folder/captions.jsonl`` (the data pipeline's export), decoded with PyAV.

    ``num_frames`` cuts every clip to that many frames from its start (clips shorter than that are
    skipped with a warning); None keeps each clip's own length (then buckets group equal lengths).
    """
    import warnings

    from skyreels_v4.io.media import read_audio_file, read_video_file

    root = Path(folder)
    listing = root / "captions.jsonl"
    if not listing.is_file():
        raise FileFormatError(listing, "expected a captions.jsonl listing the clips, but it is missing")
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FileFormatError(listing, f"line {number} is not valid JSON ({error.msg})") from error
        for key in ("id", "video", "caption"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise FileFormatError(listing, f"line {number}: expected a non-empty string {key!r}")
        start = float(row.get("start_s") or 0.0)
        end = row.get("end_s")
        video, fps = read_video_file(root / row["video"], start_s=start, end_s=end)
        if row.get("audio"):
            audio, rate = read_audio_file(root / row["audio"], start_s=start, end_s=end)
        else:
            audio, rate = read_audio_file(root / row["video"], start_s=start, end_s=end)
        if num_frames is not None:
            if video.shape[1] < num_frames:
                warnings.warn(
                    f"{row['video']}: {video.shape[1]} frames < num_frames={num_frames}; skipped",
                    stacklevel=2,
                )
                continue
            video = video[:, :num_frames]
            audio = audio[:, : round(num_frames / fps * rate)]
        yield CacheSample(
            id=row["id"], video=video, audio=audio, sample_rate=rate, fps=fps, caption=row["caption"]
        )


def _component_config(component: Any) -> dict[str, Any]:
    for name in ("to_config", "config_dict"):
        method = getattr(component, name, None)
        if callable(method):
            try:
                return dict(method())
            except TypeError:
                pass
    return {"class": type(component).__name__}


def build_latent_cache(
    samples: Iterable[CacheSample],
    out: str | os.PathLike[str],
    *,
    video_vae: Any,
    audio_vae: Any,
    text_encoder: Any,
    shard_size: int = 64,
    progress: bool = True,
    total: int | None = None,
) -> Path:
    """Encode ``samples`` and write the cache into ``out`` (see the module docstring).

    Every clip must have ``F = 1 + k·temporal_factor`` frames, a size divisible by the spatial
    factor, and finite values; a clip that breaks this raises naming its id.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise SkyReelsError(f"shard_size: expected a positive int, got {shard_size!r}")
    root = Path(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PreflightError(
            f"out: cannot write the cache into {root} ({error.strerror or error})"
        ) from error
    (root / CACHE_INDEX).unlink(missing_ok=True)  # an old index must not describe new shards

    buckets: dict[tuple[int, int, int], dict[str, Any]] = {}
    pending: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
    items: list[dict[str, Any]] = []
    shard_counter = [0]
    fps_seen: set[float] = set()

    def flush(key: tuple[int, int, int]) -> None:
        rows = pending.pop(key, [])
        if not rows:
            return
        length = max(r["text_tokens"].shape[0] for r in rows)
        text = torch.zeros(len(rows), length, rows[0]["text_tokens"].shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            n = r["text_tokens"].shape[0]
            text[i, :n], mask[i, :n] = r["text_tokens"], True
        name = f"shard-{shard_counter[0]:05d}.safetensors"
        shard_counter[0] += 1
        save_safetensors(
            root / name,
            {
                "video_latents": torch.stack([r["video"] for r in rows]),
                "audio_latents": torch.stack([r["audio"] for r in rows]),
                "text_tokens": text,
                "text_mask": mask,
            },
        )
        bucket = buckets[key]
        for row_index, r in enumerate(rows):
            items.append({**r["meta"], "bucket": bucket["id"], "shard": name, "row": row_index})
        bucket["shards"].append({"file": name, "count": len(rows)})

    iterator = tqdm(samples, total=total, desc="caching latents", disable=not progress)
    seen_ids: set[str] = set()
    with torch.no_grad():
        for sample in iterator:
            if sample.id in seen_ids:
                raise SkyReelsError(f"samples: duplicate id {sample.id!r}")
            seen_ids.add(sample.id)
            for name, tensor in (("video", sample.video), ("audio", sample.audio)):
                if not bool(torch.isfinite(tensor).all()):
                    raise NonFiniteError(f"sample {sample.id!r}: its {name} holds NaN or inf values")
            _, frames, height, width = sample.video.shape
            key = (frames, height, width)
            fps_seen.add(float(sample.fps))
            video = video_vae.encode(sample.video[None].float())[0]
            audio = audio_vae.encode(sample.audio[None].float(), sample.sample_rate)[0]
            expected = audio_vae.num_latents_for_frames(frames, sample.fps)
            if audio.shape[-1] < expected:
                audio = torch.nn.functional.pad(audio, (0, expected - audio.shape[-1]))
            audio = audio[..., :expected]
            embedding = text_encoder.encode([sample.caption])
            n = int(embedding.mask[0].sum())
            if key not in buckets:
                buckets[key] = {
                    "id": len(buckets),
                    "frames": frames,
                    "height": height,
                    "width": width,
                    "shards": [],
                }
            pending.setdefault(key, []).append(
                {
                    "video": video.float().cpu(),
                    "audio": audio.float().cpu(),
                    "text_tokens": embedding.tokens[0, :n].float().cpu(),
                    "meta": {
                        "id": sample.id,
                        "caption": sample.caption,
                        "fps": float(sample.fps),
                        "labels": sample.labels,
                    },
                }
            )
            if len(pending[key]) >= shard_size:
                flush(key)
        for key in list(pending):
            flush(key)
        if not items:
            raise SkyReelsError("samples: expected at least one clip, got none")
        empty = text_encoder.encode([""])
        save_safetensors(root / "empty_prompt.safetensors", {"text_tokens": empty.tokens[0].float().cpu()})
        blacks = {}
        for _, height, width in buckets:
            black = video_vae.encode(-torch.ones(1, 3, 1, height, width))[0, :, 0].float().cpu()
            blacks[f"h{black.shape[-2]}_w{black.shape[-1]}"] = black
        save_safetensors(root / "black_latent.safetensors", blacks)
    index = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_VERSION,
        "video_latent_channels": int(video_vae.latent_channels),
        "audio_latent_channels": int(audio_vae.latent_channels),
        "text_dim": int(getattr(text_encoder, "dim", items and 0)),
        "temporal_factor": int(video_vae.temporal_factor),
        "spatial_factor": int(video_vae.spatial_factor),
        "audio_sample_rate": int(audio_vae.sample_rate),
        "video_codec": _component_config(video_vae),
        "audio_codec": _component_config(audio_vae),
        "text_encoder": _component_config(text_encoder),
        "fps": sorted(fps_seen),
        "buckets": sorted(buckets.values(), key=lambda b: b["id"]),
        "items": items,
    }
    # The components themselves, so that a trained model can be exported as a complete pipeline folder.
    for name, component in (
        ("video_vae", video_vae),
        ("audio_vae", audio_vae),
        ("text_encoder", text_encoder),
    ):
        component.save_pretrained(root / "components" / name)
    atomic_write_json(root / CACHE_INDEX, index)
    return root


class LatentCache:
    """Read access to a built cache: items by position, shards loaded lazily (a small LRU)."""

    def __init__(self, folder: str | os.PathLike[str], *, max_open_shards: int = 8) -> None:
        self.root = Path(folder)
        index = read_json(self.root / CACHE_INDEX, what="latent cache index")
        if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
            raise FileFormatError(self.root / CACHE_INDEX, f"expected a {CACHE_FORMAT} index")
        if index.get("format_version") != CACHE_VERSION:
            raise FileFormatError(
                self.root / CACHE_INDEX,
                f"expected format_version {CACHE_VERSION}, got {index.get('format_version')!r}",
            )
        self.index = index
        self.items: list[dict[str, Any]] = index["items"]
        self.buckets = {b["id"]: b for b in index["buckets"]}
        self._shards: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
        self._max_open = max_open_shards
        self.empty_prompt = read_safetensors(self.root / "empty_prompt.safetensors", check_finite=True)[
            "text_tokens"
        ]
        blacks = read_safetensors(self.root / "black_latent.safetensors", check_finite=True)
        self.black_latents = {tuple(v.shape[-2:]): v for v in blacks.values()}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def video_latent_channels(self) -> int:
        return int(self.index["video_latent_channels"])

    @property
    def audio_latent_channels(self) -> int:
        return int(self.index["audio_latent_channels"])

    @property
    def text_dim(self) -> int:
        return int(self.empty_prompt.shape[-1])

    def bucket_of(self, position: int) -> int:
        return int(self.items[position]["bucket"])

    def _shard(self, name: str) -> dict[str, Tensor]:
        shard = self._shards.get(name)
        if shard is None:
            shard = read_safetensors(self.root / name, check_finite=True)
            self._shards[name] = shard
            while len(self._shards) > self._max_open:
                self._shards.popitem(last=False)
        else:
            self._shards.move_to_end(name)
        return shard

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.items[position]
        shard = self._shard(item["shard"])
        row = item["row"]
        length = int(shard["text_mask"][row].sum())
        return {
            "video_latents": shard["video_latents"][row],
            "audio_latents": shard["audio_latents"][row],
            "text_tokens": shard["text_tokens"][row, :length],
            "index": position,
            "bucket": item["bucket"],
        }


def collate_cache_items(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Stack items of one bucket; text right-padded to the longest with a mask."""
    length = max(i["text_tokens"].shape[0] for i in items)
    dim = items[0]["text_tokens"].shape[-1]
    text = torch.zeros(len(items), length, dim)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for n, i in enumerate(items):
        k = i["text_tokens"].shape[0]
        text[n, :k], mask[n, :k] = i["text_tokens"], True
    buckets = {i["bucket"] for i in items}
    if len(buckets) != 1:
        raise SkyReelsError(f"batch: expected items of one bucket, got buckets {sorted(buckets)}")
    return {
        "video_latents": torch.stack([i["video_latents"] for i in items]),
        "audio_latents": torch.stack([i["audio_latents"] for i in items]),
        "text_tokens": text,
        "text_mask": mask,
        "index": torch.tensor([i["index"] for i in items]),
    }


class BucketBatchSampler:
    """Shuffled batches within buckets, reproducible from ``seed`` and resumable mid-epoch.

    ``state_dict()`` holds the epoch and how many batches of it were handed out; a loader resumed with
    ``load_state_dict`` yields exactly the batches the uninterrupted run would have (torchdata's
    ``StatefulDataLoader`` saves and restores it with the checkpoint).
    """

    def __init__(self, cache: LatentCache, *, batch_size: int, seed: int, drop_last: bool = True) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SkyReelsError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.cache = cache
        self.batch_size = batch_size
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self.served = 0

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        by_bucket: dict[int, list[int]] = {}
        for position in range(len(self.cache)):
            by_bucket.setdefault(self.cache.bucket_of(position), []).append(position)
        batches = []
        for bucket in sorted(by_bucket):
            members = np.array(by_bucket[bucket])
            rng.shuffle(members)
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size].tolist()
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __len__(self) -> int:
        return len(self._batches(0))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        start = self.served
        for batch in batches[start:]:
            self.served += 1
            yield batch
        self.epoch += 1
        self.served = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "served": self.served, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise SkyReelsError(
                f"sampler state: saved with seed {state.get('seed')}, this run uses {self.seed}"
            )
        self.epoch, self.served = int(state["epoch"]), int(state["served"])
