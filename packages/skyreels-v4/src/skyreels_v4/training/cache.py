"""The latent cache (paper 4: training on precomputed latents): clips -> video/audio latents and text
embeddings, stored once as safetensors shards with an index, so training never runs a VAE or the
text encoder.

Sources: the procedural world (:func:`world_samples`) or a folder of clips with ``captions.jsonl``
(:func:`folder_samples`; one JSON object per line: ``{"id", "video": "clips/a.mp4", "caption",
"start_s"?, "end_s"?, "audio"?}``, the data pipeline's export format; :func:`read_caption_listing`
checks the whole listing before any work). Clips are grouped into buckets of equal size
``(frames, height, width)`` so that a batch never mixes shapes.

Captions are structured prompts (paper 3.4.3). The text encoder reads :func:`prompt_text` of each
caption: the combined visual + acoustic prompt (3.1) that the pipeline encodes for the same caption
at inference (``skyreels_v4.pipeline.prompting.plan_prompt``), so training and inference see the
same text.

Layout::

    cache_index.json        format, fingerprint, codec/encoder configs, buckets, items (id, caption,
                            prompt, labels, where)
    cache_progress.json     while building: the finished shards (deleted when the index is written)
    components/{video_vae, audio_vae, text_encoder}/  the components that made it (for export)
    empty_prompt.safetensors  the text encoder's embedding of "" (the CFG / text-dropout negative)
    black_latent.safetensors  the video codec's latent of one black frame per frame size (eq. 7)
    shard-00000.safetensors ... per bucket: video_latents [N, C, T, h, w], audio_latents [N, Ca, La],
                            text_tokens [N, L, D], text_mask [N, L] (text_pooled [N, P] if pooled)

Shards, the progress file and the index are written atomically, the index last. A build that is
interrupted resumes (:attr:`ExistingCache.RESUME`): shards listed in the progress file are kept and
their clips are not decoded or encoded again; the resumed cache equals the uninterrupted one (same
shards, same order), because shard boundaries depend only on the order of the clips. A folder made
with other settings (a different source, codec, encoder or shard size) is refused, naming what
differs, unless :attr:`ExistingCache.OVERWRITE` is asked for.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from skyreels_v4.errors import (
    ConfigMismatchError,
    FileFormatError,
    NonFiniteError,
    PreflightError,
    PromptError,
    SkyReelsError,
)
from skyreels_v4.io import (
    all_finite,
    atomic_write_json,
    read_json,
    read_safetensors,
    safetensors_keys,
    save_safetensors,
)
from skyreels_v4.prompts import SegmentOrder, combined_prompt, has_shot_markup, parse_multishot, parse_prompt
from skyreels_v4.runs.data import check_same_replicas

__all__ = [
    "CACHE_INDEX",
    "CACHE_PROGRESS",
    "CacheSample",
    "CaptionRow",
    "ExistingCache",
    "LatentCache",
    "build_latent_cache",
    "folder_samples",
    "prompt_text",
    "read_caption_listing",
    "world_samples",
]

CACHE_INDEX = "cache_index.json"
CACHE_PROGRESS = "cache_progress.json"
CACHE_FORMAT = "skyreels-v4-latent-cache"
CACHE_VERSION = 1


class ExistingCache(enum.Enum):
    """What :func:`build_latent_cache` does with what it finds in its output folder."""

    RESUME = "resume"  # keep a finished or partial cache made with the same settings; refuse others
    OVERWRITE = "overwrite"  # delete the cache files found there and start over


@dataclass(frozen=True, kw_only=True, eq=False)
class CacheSample:
    """One clip to cache: pixels ``[3, F, H, W]`` in [-1, 1], waveform ``[channels, samples]``.

    ``origin`` names where the clip came from (a file) for error messages.
    """

    id: str
    video: Tensor
    audio: Tensor
    sample_rate: int
    fps: float
    caption: str
    labels: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


def prompt_text(caption: str, *, order: SegmentOrder = SegmentOrder.STANDARD) -> str:
    """The text the encoder reads for ``caption``: the combined visual + acoustic prompt (paper 3.1)
    of the parsed structured caption (or multi-shot prompt), exactly as the pipeline builds it.

    Raises:
        PromptError: the caption is malformed (unbalanced tags, bad shot markup).
    """
    parsed = parse_multishot(caption) if has_shot_markup(caption) else parse_prompt(caption)
    return combined_prompt(parsed, order=order)


def world_samples(
    world: Any, *, length: int, seed: int, split: Any = "train", skip: Collection[str] = ()
) -> Iterator[CacheSample]:
    """Clips of the procedural world (``skyreels_v4.world``) with their captions and attribute labels.

    Clips whose id is in ``skip`` are not rendered (a resumed build passes its finished ids).
    """
    from skyreels_v4.world import ProceduralAVDataset, WorldSplit

    data = ProceduralAVDataset(world, length=length, seed=seed, split=WorldSplit(split))
    for index in range(length):
        sample_id = f"world-{WorldSplit(split).value}-{seed}-{index}"
        if sample_id in skip:
            continue
        item = data[index]
        labels = {
            key: item[key].tolist()
            for key in ("colour_ids", "shape_ids", "background_id", "num_objects", "has_bgm")
        }
        yield CacheSample(
            id=sample_id,
            video=item["video"],
            audio=item["audio"],
            sample_rate=world.sample_rate,
            fps=world.fps,
            caption=item["caption"],
            labels=labels,
            origin=f"world clip {index}",
        )


@dataclass(frozen=True, kw_only=True)
class CaptionRow:
    """One checked line of ``captions.jsonl``: files resolved against the folder."""

    id: str
    video: Path
    audio: Path
    caption: str
    start_s: float
    end_s: float | None
    line: int


def _time_field(listing: Path, number: int, row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise FileFormatError(listing, f"line {number}: expected {key!r} a finite number >= 0, got {value!r}")
    return float(value)


def read_caption_listing(folder: str | os.PathLike[str]) -> list[CaptionRow]:
    """Check ``folder/captions.jsonl`` completely before any work: valid JSON per line, non-empty
    string ``id`` / ``video`` / ``caption``, unique ids, media files that exist inside the folder,
    ``0 <= start_s < end_s``, captions that parse as structured prompts. Errors name the listing and
    the line (and the missing file)."""
    root = Path(folder)
    if not root.is_dir():
        raise PreflightError(f"input: expected a folder of clips with captions.jsonl, got {root}")
    listing = root / "captions.jsonl"
    if not listing.is_file():
        raise FileFormatError(listing, "expected a captions.jsonl listing the clips, but it is missing")
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FileFormatError(listing, f"cannot read it as UTF-8 text ({error})") from error
    rows: list[CaptionRow] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FileFormatError(listing, f"line {number} is not valid JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise FileFormatError(listing, f"line {number}: expected a JSON object, got {type(row).__name__}")
        for key in ("id", "video", "caption"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise FileFormatError(listing, f"line {number}: expected a non-empty string {key!r}")
        if row["id"] in seen:
            raise FileFormatError(
                listing, f"line {number}: id {row['id']!r} repeats line {seen[row['id']]}; ids must be unique"
            )
        seen[row["id"]] = number
        audio = row.get("audio")
        if audio is not None and (not isinstance(audio, str) or not audio.strip()):
            raise FileFormatError(
                listing, f"line {number}: expected 'audio' a non-empty string, got {audio!r}"
            )
        paths = {}
        for key, name in (("video", row["video"]), ("audio", audio or row["video"])):
            path = root / name  # may point outside the folder (the export's reference mode)
            if not path.is_file():
                raise FileFormatError(
                    listing, f"line {number}: caption for a missing file, {key} {root / name} does not exist"
                )
            paths[key] = path
        start = _time_field(listing, number, row, "start_s") or 0.0
        end = _time_field(listing, number, row, "end_s")
        if end is not None and end <= start:
            raise FileFormatError(listing, f"line {number}: expected start_s < end_s, got {start} and {end}")
        try:
            prompt_text(row["caption"])
        except PromptError as error:
            raise PromptError(f"{listing}: line {number}: caption: {error}") from error
        rows.append(
            CaptionRow(
                id=row["id"],
                video=paths["video"],
                audio=paths["audio"],
                caption=row["caption"],
                start_s=start,
                end_s=end,
                line=number,
            )
        )
    if not rows:
        raise FileFormatError(listing, "expected at least one clip, got no lines")
    return rows


def folder_samples(
    folder: str | os.PathLike[str],
    *,
    num_frames: int | None = None,
    temporal_factor: int = 1,
    skip: Collection[str] = (),
) -> Iterator[CacheSample]:
    """Clips listed in ``folder/captions.jsonl`` (checked first: :func:`read_caption_listing`),
    decoded with PyAV / soundfile.

    ``num_frames`` cuts every clip to that many frames from its start (clips shorter than that are
    skipped with a warning); None keeps each clip's own length cut to the longest
    ``1 + k·temporal_factor`` frames the video codec accepts (buckets group equal lengths). The audio
    is cut to the kept frames' duration. Clips whose id is in ``skip`` are not decoded. Unreadable
    media raise ``FileFormatError`` and NaN/inf samples ``NonFiniteError``, naming the file.
    """
    from skyreels_v4.io.media import read_audio_file, read_video_file

    if num_frames is not None and (
        isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1
    ):
        raise SkyReelsError(f"num_frames: expected a positive int or None, got {num_frames!r}")
    if isinstance(temporal_factor, bool) or not isinstance(temporal_factor, int) or temporal_factor < 1:
        raise SkyReelsError(f"temporal_factor: expected a positive int, got {temporal_factor!r}")
    for row in read_caption_listing(folder):
        if row.id in skip:
            continue
        video, fps = read_video_file(row.video, start_s=row.start_s, end_s=row.end_s)
        audio, rate = read_audio_file(row.audio, start_s=row.start_s, end_s=row.end_s)
        for tensor, path in ((video, row.video), (audio, row.audio)):
            if not bool(torch.isfinite(tensor).all()):
                raise NonFiniteError(f"{path}: holds NaN or inf samples (clip {row.id!r})")
        frames = video.shape[1]
        if num_frames is not None:
            if frames < num_frames:
                warnings.warn(
                    f"{row.video}: {frames} frames < num_frames={num_frames}; skipped", stacklevel=2
                )
                continue
            keep = num_frames
        else:
            keep = 1 + (frames - 1) // temporal_factor * temporal_factor
        video = video[:, :keep]
        audio = audio[:, : round(keep / fps * rate)]
        yield CacheSample(
            id=row.id,
            video=video,
            audio=audio,
            sample_rate=rate,
            fps=fps,
            caption=row.caption,
            origin=str(row.video),
        )


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (tuples -> lists, enums -> values, paths -> str)."""
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "value", str(v))))


def _component_config(component: Any) -> dict[str, Any]:
    for name in ("to_config", "config_dict"):
        method = getattr(component, name, None)
        if callable(method):
            try:
                return _jsonable(dict(method()))
            except TypeError:
                pass
    config: dict[str, Any] = {"class": type(component).__name__}
    inner = getattr(component, "config", None)
    if is_dataclass(inner) and not isinstance(inner, type):
        config["config"] = _jsonable(asdict(inner))
    for name in ("sample_rate", "audio_channels", "hop_length", "latent_channels", "dim", "latent_scale"):
        value = getattr(component, name, None)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            config[name] = value
    return config


def _weights_digest(component: Any) -> str | None:
    """A cheap digest of a module's tensors (names, shapes, dtypes, up to 4096 strided values each):
    two differently trained components of one configuration differ here."""
    state = component.state_dict() if isinstance(component, torch.nn.Module) else None
    if not state:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(state.items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].to("cpu", torch.float64).numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def _fingerprint(
    video_vae: Any, audio_vae: Any, text_encoder: Any, *, shard_size: int, source: Any, order: SegmentOrder
) -> dict[str, Any]:
    components = {
        name: {"config": _component_config(c), "weights": _weights_digest(c)}
        for name, c in (("video_vae", video_vae), ("audio_vae", audio_vae), ("text_encoder", text_encoder))
    }
    return _jsonable({"source": source, "shard_size": shard_size, "prompt_order": order.value, **components})


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(saved) | set(wanted)) if saved.get(key) != wanted.get(key)]


def _prepare_folder(
    root: Path, fingerprint: dict[str, Any], existing: ExistingCache
) -> dict[str, Any] | None:
    """Check the output folder; returns the progress of a resumable build (or None to start fresh).
    A finished cache with the same fingerprint is reported by returning ``{"finished": True}``."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PreflightError(
            f"out: cannot write the cache into {root} ({error.strerror or error})"
        ) from error
    index_path, progress_path = root / CACHE_INDEX, root / CACHE_PROGRESS
    if existing is ExistingCache.OVERWRITE:
        for path in (index_path, progress_path, *root.glob("shard-*.safetensors")):
            path.unlink(missing_ok=True)
        return None
    for path, what in ((index_path, "a finished cache"), (progress_path, "a partial cache build")):
        if not path.exists():
            continue
        saved = read_json(path, what=what)
        if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), dict):
            raise FileFormatError(
                path, f"expected {what} with a 'fingerprint'; delete the folder or overwrite"
            )
        differs = _differences(saved["fingerprint"], fingerprint)
        if differs:
            raise ConfigMismatchError(
                f"out: {root} holds {what} made with different {', '.join(differs)}; "
                "choose another output folder or overwrite it (--overwrite / ExistingCache.OVERWRITE)"
            )
        if path == index_path:
            return {"finished": True}
        return saved
    return None


def build_latent_cache(
    samples: Iterable[CacheSample] | Callable[[frozenset[str]], Iterable[CacheSample]],
    out: str | os.PathLike[str],
    *,
    video_vae: Any,
    audio_vae: Any,
    text_encoder: Any,
    shard_size: int = 64,
    progress: bool = True,
    total: int | None = None,
    source: Any = None,
    existing: ExistingCache = ExistingCache.RESUME,
    order: SegmentOrder = SegmentOrder.STANDARD,
    keyframe_scale: int | None = None,
) -> Path:
    """Encode ``samples`` and write the cache into ``out`` (see the module docstring).

    ``keyframe_scale`` s (paper 4.5's joint prediction): the samples are the *high*-resolution clips;
    the cached clip is each sample resized to ``1/s`` of its size (antialiased bilinear, as the
    pipeline's base pass sees its inputs), and ``keyframe_latents`` holds every latent frame of the
    full-size clip, from which training picks the keyframes. The sample's size must be divisible by
    ``s x spatial factor``.

    ``source`` describes where the samples come from (JSON data, e.g. the world's settings or the
    listing's digest); it is part of the fingerprint that decides whether a folder can be resumed.
    Every clip must have ``F = 1 + k·temporal_factor`` frames, a size divisible by the spatial
    factor, finite values and a caption that parses; a clip that breaks this raises naming its id
    (and its file). With :attr:`ExistingCache.RESUME`, clips already in finished shards are skipped;
    ``samples`` may be a function of those clips' ids that returns the clips to iterate, so that a
    resumed build does not even decode them (e.g. ``lambda done: folder_samples(dir, skip=done)``).
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise SkyReelsError(f"shard_size: expected a positive int, got {shard_size!r}")
    if not isinstance(existing, ExistingCache):
        raise TypeError(f"existing: expected an ExistingCache, got {existing!r}")
    if not isinstance(order, SegmentOrder):
        raise TypeError(f"order: expected a SegmentOrder, got {order!r}")
    if keyframe_scale is not None and (
        isinstance(keyframe_scale, bool) or not isinstance(keyframe_scale, int) or keyframe_scale < 2
    ):
        raise SkyReelsError(f"keyframe_scale: expected an int >= 2 or None, got {keyframe_scale!r}")
    root = Path(out)
    fingerprint = _fingerprint(
        video_vae, audio_vae, text_encoder, shard_size=shard_size, source=source, order=order
    )
    if keyframe_scale is not None:  # absent otherwise, so caches made before it still resume
        fingerprint["keyframe_scale"] = keyframe_scale
    resumed = _prepare_folder(root, fingerprint, existing)
    if resumed is not None and resumed.get("finished"):
        return root
    temporal, spatial = int(video_vae.temporal_factor), int(video_vae.spatial_factor)

    # State restored from a partial build: finished shards, the bucket table, their clips.
    shards_done: list[dict[str, Any]] = list(resumed["shards"]) if resumed else []
    buckets: dict[tuple[int, int, int], dict[str, Any]] = {}
    for bucket in resumed["buckets"] if resumed else []:
        buckets[(bucket["frames"], bucket["height"], bucket["width"])] = bucket
    for bucket in buckets.values():
        bucket["shards"] = [s for s in bucket["shards"] if s["file"] in {d["file"] for d in shards_done}]
    finished = {item["id"] for shard in shards_done for item in shard["items"]}
    pending: dict[tuple[int, int, int], list[dict[str, Any]]] = {}

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
        tensors = {
            "video_latents": torch.stack([r["video"] for r in rows]),
            "audio_latents": torch.stack([r["audio"] for r in rows]),
            "text_tokens": text,
            "text_mask": mask,
        }
        if rows[0]["pooled"] is not None:
            tensors["text_pooled"] = torch.stack([r["pooled"] for r in rows])
        if rows[0]["keyframes"] is not None:
            tensors["keyframe_latents"] = torch.stack([r["keyframes"] for r in rows])
        name = f"shard-{len(shards_done):05d}.safetensors"
        save_safetensors(root / name, tensors)
        bucket = buckets[key]
        bucket["shards"].append({"file": name, "count": len(rows)})
        shards_done.append({"file": name, "bucket": bucket["id"], "items": [r["meta"] for r in rows]})
        atomic_write_json(
            root / CACHE_PROGRESS,
            {
                "format": CACHE_FORMAT,
                "fingerprint": fingerprint,
                "shards": shards_done,
                "buckets": list(buckets.values()),
            },
        )

    if callable(samples):
        samples = samples(frozenset(finished))
    remaining = None if total is None else max(0, total - len(finished))
    iterator = tqdm(samples, total=remaining, desc="caching latents", disable=not progress)
    seen_ids: set[str] = set()
    with torch.no_grad():
        for sample in iterator:
            where = f"sample {sample.id!r}" + (f" ({sample.origin})" if sample.origin else "")
            if sample.id in seen_ids:
                raise SkyReelsError(f"samples: duplicate id {sample.id!r}")
            seen_ids.add(sample.id)
            if sample.id in finished:
                continue
            for name, tensor in (("video", sample.video), ("audio", sample.audio)):
                if not bool(torch.isfinite(tensor).all()):
                    raise NonFiniteError(f"{where}: its {name} holds NaN or inf values")
            if sample.video.ndim != 4 or sample.video.shape[0] != 3:
                raise SkyReelsError(f"{where}: expected video [3, F, H, W], got {tuple(sample.video.shape)}")
            _, frames, height, width = sample.video.shape
            cell = spatial * (keyframe_scale or 1)
            if (frames - 1) % temporal or height % cell or width % cell:
                raise SkyReelsError(
                    f"{where}: expected 1 + k*{temporal} frames and a size divisible by {cell} "
                    f"(the video codec's factors{' x keyframe_scale' if keyframe_scale else ''}), "
                    f"got {frames} frames of {height}x{width}"
                )
            pixels, keyframes = sample.video[None].float(), None
            if keyframe_scale is not None:
                from skyreels_v4.pipeline.refine import resize_pixels

                keyframes = video_vae.encode(pixels)[0].float().cpu()
                height, width = height // keyframe_scale, width // keyframe_scale
                pixels = resize_pixels(sample.video.float(), (height, width))[None]
            try:
                text = prompt_text(sample.caption, order=order)
            except PromptError as error:
                raise PromptError(f"{where}: caption: {error}") from error
            key = (frames, height, width)
            video = video_vae.encode(pixels)[0]
            audio = audio_vae.encode(sample.audio[None].float(), sample.sample_rate)[0]
            expected = audio_vae.num_latents_for_frames(frames, sample.fps)
            if audio.shape[-1] < expected:
                audio = torch.nn.functional.pad(audio, (0, expected - audio.shape[-1]))
            audio = audio[..., :expected]
            for name, tensor in (("video latents", video), ("audio latents", audio)):
                if not bool(torch.isfinite(tensor).all()):
                    raise NonFiniteError(f"{where}: the codec's {name} hold NaN or inf values")
            embedding = text_encoder.encode([text])
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
                    "pooled": None if embedding.pooled is None else embedding.pooled[0].float().cpu(),
                    "keyframes": keyframes,
                    "meta": {
                        "id": sample.id,
                        "caption": sample.caption,
                        "prompt": text,
                        "fps": float(sample.fps),
                        "labels": sample.labels,
                    },
                }
            )
            if len(pending[key]) >= shard_size:
                flush(key)
        for key in list(pending):
            flush(key)
        if not shards_done:
            raise SkyReelsError("samples: expected at least one clip, got none")
        empty = text_encoder.encode([""])
        empty_tensors = {"text_tokens": empty.tokens[0].float().cpu()}
        if empty.pooled is not None:
            empty_tensors["text_pooled"] = empty.pooled[0].float().cpu()
        save_safetensors(root / "empty_prompt.safetensors", empty_tensors)
        blacks = {}
        for _, height, width in buckets:
            for scale in (1,) if keyframe_scale is None else (1, keyframe_scale):
                size = (1, 3, 1, height * scale, width * scale)
                black = video_vae.encode(-torch.ones(size))[0, :, 0].float().cpu()
                blacks[f"h{black.shape[-2]}_w{black.shape[-1]}"] = black
        save_safetensors(root / "black_latent.safetensors", blacks)
    items = [
        {**meta, "bucket": shard["bucket"], "shard": shard["file"], "row": row}
        for shard in shards_done
        for row, meta in enumerate(shard["items"])
    ]
    index = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "video_latent_channels": int(video_vae.latent_channels),
        "audio_latent_channels": int(audio_vae.latent_channels),
        "text_dim": int(getattr(text_encoder, "dim", empty.tokens.shape[-1])),
        "temporal_factor": temporal,
        "spatial_factor": spatial,
        "keyframe_scale": keyframe_scale,
        "audio_sample_rate": int(audio_vae.sample_rate),
        "video_codec": _component_config(video_vae),
        "audio_codec": _component_config(audio_vae),
        "text_encoder": _component_config(text_encoder),
        "fps": sorted({item["fps"] for item in items}),
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
    (root / CACHE_PROGRESS).unlink(missing_ok=True)
    return root


class LatentCache:
    """Read access to a built cache: items by position. Shard files are memory-mapped (an LRU of
    ``max_open_shards`` open files) and an item reads its own rows only, checked for NaN/inf; so a
    random batch costs its items' bytes, not its shards' (the operating system's page cache keeps what
    is read often)."""

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
        self._handles: OrderedDict[str, tuple[Any, frozenset[str]]] = OrderedDict()
        self._max_open = max_open_shards
        empty = read_safetensors(self.root / "empty_prompt.safetensors", check_finite=True)
        self.empty_prompt: Tensor = empty["text_tokens"]
        self.empty_pooled: Tensor | None = empty.get("text_pooled")
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
    def keyframe_scale(self) -> int | None:
        """s when the cache holds full-size ``keyframe_latents`` beside clips at ``1/s`` (else None)."""
        value = self.index.get("keyframe_scale")
        return None if value is None else int(value)

    @property
    def text_dim(self) -> int:
        return int(self.empty_prompt.shape[-1])

    def bucket_of(self, position: int) -> int:
        return int(self.items[position]["bucket"])

    def _handle(self, name: str) -> tuple[Any, frozenset[str]]:
        """The open (memory-mapped) shard file ``name`` and its tensor names; its header is checked
        when it is opened."""
        entry = self._handles.get(name)
        if entry is not None:
            self._handles.move_to_end(name)
            return entry
        from safetensors import SafetensorError, safe_open

        path = self.root / name
        keys = frozenset(safetensors_keys(path))  # typed errors for a missing, truncated or corrupt file
        try:
            entry = (safe_open(str(path), framework="pt", device="cpu"), keys)
        except SafetensorError as error:
            raise FileFormatError(path, f"corrupt safetensors file ({error})") from error
        self._handles[name] = entry
        while len(self._handles) > self._max_open:
            self._handles.popitem(last=False)
        return entry

    def _read(self, handle: Any, shard: str, key: str, index: tuple) -> Tensor:
        """Rows ``index`` of tensor ``key``: only their bytes are read, copied out of the mapping (the
        mapped view would carry in-place edits into later reads) and checked for NaN/inf."""
        from safetensors import SafetensorError

        try:
            value = handle.get_slice(key)[index].clone()
        except (SafetensorError, IndexError) as error:  # no such tensor, no such row
            raise FileFormatError(self.root / shard, f"cannot read {key!r} rows {index}: {error}") from error
        if not all_finite(value):
            where = f"{self.root / shard}: tensor {key!r} row {index[0]}"
            raise NonFiniteError(f"{where} holds NaN or inf values")
        return value

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.items[position]
        shard, row = item["shard"], int(item["row"])
        handle, keys = self._handle(shard)
        length = int(self._read(handle, shard, "text_mask", (row,)).sum())
        out = {
            "video_latents": self._read(handle, shard, "video_latents", (row,)),
            "audio_latents": self._read(handle, shard, "audio_latents", (row,)),
            "text_tokens": self._read(handle, shard, "text_tokens", (row, slice(0, length))),
            "index": position,
            "bucket": item["bucket"],
        }
        if "text_pooled" in keys:
            out["pooled_text"] = self._read(handle, shard, "text_pooled", (row,))
        if "keyframe_latents" in keys:
            out["keyframe_latents"] = self._read(handle, shard, "keyframe_latents", (row,))
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Open files do not travel to data-loader worker processes; each reopens what it reads.
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state


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
    batch = {
        "video_latents": torch.stack([i["video_latents"] for i in items]),
        "audio_latents": torch.stack([i["audio_latents"] for i in items]),
        "text_tokens": text,
        "text_mask": mask,
        "index": torch.tensor([i["index"] for i in items]),
    }
    if all("pooled_text" in i for i in items):
        batch["pooled_text"] = torch.stack([i["pooled_text"] for i in items])
    if all("keyframe_latents" in i for i in items):
        batch["keyframe_latents"] = torch.stack([i["keyframe_latents"] for i in items])
    return batch


class BucketBatchSampler:
    """Shuffled batches within buckets, reproducible from ``seed`` and resumable mid-epoch.

    ``state_dict()`` holds the epoch and how many batches of it were handed out; a loader resumed with
    ``load_state_dict`` yields exactly the batches the uninterrupted run would have (torchdata's
    ``StatefulDataLoader`` saves and restores it with the checkpoint).

    Data parallelism: with ``num_replicas`` R > 1 the epoch's batch list (the same on every rank) is
    dealt round-robin, replica ``rank`` taking batches ``rank, rank + R, ...``, and cut to a multiple of
    R so that every replica takes the same number of steps (a replica that runs out early would leave
    the others waiting in a collective). Ranks of one sequence-parallel group pass the same ``rank``
    (``skyreels_v4.scale.lightning.data_parallel_rank``) and so read the same batches.
    """

    def __init__(
        self,
        cache: LatentCache,
        *,
        batch_size: int,
        seed: int,
        drop_last: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SkyReelsError(f"batch_size: expected a positive int, got {batch_size!r}")
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise SkyReelsError(f"num_replicas: expected a positive int, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise SkyReelsError(f"rank: expected an int in [0, {num_replicas}), got {rank!r}")
        self.cache = cache
        self.batch_size = batch_size
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
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
        batches = [batches[i] for i in order]
        if self.num_replicas > 1:
            usable = len(batches) - len(batches) % self.num_replicas
            if usable == 0:
                raise SkyReelsError(
                    f"num_replicas: {self.num_replicas} data-parallel replicas but the cache "
                    f"{self.cache.root} gives only {len(batches)} batches of {self.batch_size} per epoch"
                )
            batches = batches[self.rank : usable : self.num_replicas]
        return batches

    def __len__(self) -> int:
        return len(self._batches(0))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        if self.served >= len(batches):
            # The last epoch was handed out whole, but its iterator was not run past the end (a loop
            # that stops after len(self) batches, as Lightning's does): that epoch is over.
            self.epoch, self.served = self.epoch + 1, 0
            batches = self._batches(self.epoch)
        start = self.served
        for batch in batches[start:]:
            self.served += 1
            yield batch
        self.epoch += 1
        self.served = 0

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "served": self.served,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        check_same_replicas(state, self.num_replicas)
        if int(state.get("seed", self.seed)) != self.seed:
            raise SkyReelsError(
                f"sampler state: saved with seed {state.get('seed')}, this run uses {self.seed}"
            )
        self.epoch, self.served = int(state["epoch"]), int(state["served"])
