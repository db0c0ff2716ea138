"""The stages of the paper's training schedule (section 4, Table 1) as recipe pieces.

- :class:`StageTrainingModule`: ``JointTrainingModule`` plus ``image_tasks``, the task mixture for
  single-frame (image) batches. Table 1 mixes T2I with T2V and inpainting in one stage; video tasks
  (image-to-video, extension, interpolation) cannot be drawn for a one-frame clip (the task sampler
  refuses them mid-run), so image batches draw from their own mixture (T2I = ``t2v`` on a one-frame
  clip: audio absent, no audio loss; ``image_inpainting``; ``image_reference``).
- :class:`StageDataModule`: ``LatentCacheDataModule`` plus the stage's resolutions, durations and
  frame rate as data, checked against the cache's buckets before any work (``preflight``).
- :class:`ExportModel`: a callback that writes the trained transformer as a model folder
  (``SkyReelsV4Transformer.save_pretrained``) when training ends: the folder the next stage's
  ``model.init_from`` names (stage chaining).
- :func:`merge_branches`: the joint stage's starting point, the video branch of the video-pretrain
  model with the audio branch of the audio-pretrain model (paper 4.3).
- :func:`build_tiny_caches`: the procedural-world caches the tiny recipes train on (images, images +
  videos, videos of two durations).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from skyreels_v4.errors import ConfigMismatchError, PreflightError, SkyReelsError
from skyreels_v4.training.cache import CACHE_INDEX, CacheSample, build_latent_cache, world_samples
from skyreels_v4.training.data import LatentCacheDataModule
from skyreels_v4.training.module import JointTrainingModule
from skyreels_v4.training.tasks import TaskName, parse_task_mixture, sample_task

__all__ = [
    "ExportModel",
    "ExportWeights",
    "StageDataModule",
    "StageTrainingModule",
    "build_tiny_caches",
    "image_samples",
    "merge_branches",
]

# Tasks that make sense on a one-frame clip (an image).
_IMAGE_TASK_NAMES = frozenset({"t2v", "t2av", "t2a", "image_inpainting", "image_reference", "text_to_video"})


class StageTrainingModule(JointTrainingModule):
    """``JointTrainingModule`` whose single-frame batches draw from ``image_tasks`` (module docstring).

    Args:
        image_tasks: the task mixture for batches of one-frame clips (default ``{"t2v": 1.0}``, i.e.
            T2I); only image tasks (t2v, t2av, t2a, image_inpainting, image_reference) are allowed.
        **kwargs: ``JointTrainingModule``'s arguments.
    """

    def __init__(self, *, image_tasks: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        image_tasks = dict(image_tasks or {"t2v": 1.0})
        bad = sorted(name for name in image_tasks if name not in _IMAGE_TASK_NAMES)
        if bad:
            raise SkyReelsError(
                f"image_tasks: {bad} cannot be drawn for a one-frame clip; "
                f"expected some of {sorted(_IMAGE_TASK_NAMES)}"
            )
        self.image_mixture = parse_task_mixture(image_tasks)
        self.save_hyperparameters()

    def prepare_batch(
        self,
        batch: Mapping[str, Tensor],
        *,
        generator: torch.Generator,
        task: TaskName | None = None,
        keyframes: bool = True,
    ) -> dict[str, Any]:
        if task is None and batch["video_latents"].shape[2] == 1:
            task = sample_task(self.image_mixture, generator)
        return super().prepare_batch(batch, generator=generator, task=task, keyframes=keyframes)


def _sizes(name: str, value: Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SkyReelsError(f"data.{name}: expected a list of pixel sizes or null, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise SkyReelsError(f"data.{name}: expected positive ints (pixels), got {item!r}")
    return tuple(value)


class StageDataModule(LatentCacheDataModule):
    """``LatentCacheDataModule`` with the stage's clip geometry as data (checked in ``preflight``).

    Args:
        image_sizes: allowed shorter sides (pixels) of one-frame clips; ``[]`` = no images allowed,
            null = not checked. Table 1's "256px" is a shorter side of 256.
        video_sizes: the same for clips of more than one frame.
        durations_s: ``[shortest, longest]`` duration of a video clip in seconds (frames / fps).
        fps: the frame rate every clip must have (null = not checked).
        **kwargs: ``LatentCacheDataModule``'s arguments.
    """

    def __init__(
        self,
        *,
        image_sizes: list[int] | None = None,
        video_sizes: list[int] | None = None,
        durations_s: tuple[float, float] | None = None,
        fps: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_sizes = _sizes("image_sizes", image_sizes)
        self.video_sizes = _sizes("video_sizes", video_sizes)
        if durations_s is not None:
            low, high = (float(v) for v in durations_s)
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
                raise SkyReelsError(
                    f"data.durations_s: expected [shortest, longest] > 0, got {durations_s!r}"
                )
            durations_s = (low, high)
        self.durations_s = durations_s
        if fps is not None and (isinstance(fps, bool) or not math.isfinite(float(fps)) or float(fps) <= 0):
            raise SkyReelsError(f"data.fps: expected a positive frame rate, got {fps!r}")
        self.fps = None if fps is None else float(fps)
        super().__init__(**kwargs)
        self.save_hyperparameters()

    def check_buckets(self) -> None:
        """PreflightError naming the cache and the bucket when a clip breaks the stage's geometry."""
        for cache, setting in ((self.cache, "data.cache_dir"), (self.val_cache, "data.val_cache_dir")):
            if cache is None:
                continue
            where = f"{setting}: the cache {cache.root}"
            fps_values = {float(item.get("fps", 0.0)) for item in cache.items}
            if self.fps is not None and fps_values != {self.fps}:
                raise PreflightError(
                    f"{where} holds clips at {sorted(fps_values)} fps; data.fps is {self.fps}"
                )
            for bucket in cache.buckets.values():
                frames, side = int(bucket["frames"]), min(int(bucket["height"]), int(bucket["width"]))
                shape = f"{frames} frames of {bucket['height']}x{bucket['width']}"
                kind, allowed = ("image", self.image_sizes) if frames == 1 else ("video", self.video_sizes)
                if allowed is not None and side not in allowed:
                    raise PreflightError(
                        f"{where} holds {shape}; data.{kind}_sizes allows shorter sides {list(allowed)}"
                    )
                if frames > 1 and self.durations_s is not None:
                    rate = self.fps or max(fps_values)
                    seconds = frames / rate
                    low, high = self.durations_s
                    if not low - 1e-6 <= seconds <= high + 1e-6:
                        raise PreflightError(
                            f"{where} holds {shape} ({seconds:.3g} s at {rate:g} fps); "
                            f"data.durations_s allows [{low:g}, {high:g}] s"
                        )

    def preflight(self, model: L.LightningModule) -> None:
        """The runs pre-flight hook: latents and text width match the model, buckets match the stage."""
        from skyreels_v4.runs import check_matches

        transformer = getattr(model, "transformer", None)
        if transformer is not None:
            root = self.cache.root
            check_matches(
                f"data.cache_dir ({root}) video_latent_channels",
                self.cache.video_latent_channels,
                "model.video_latent_channels",
                transformer.video_latent_channels,
            )
            check_matches(
                f"data.cache_dir ({root}) audio_latent_channels",
                self.cache.audio_latent_channels,
                "model.audio_latent_channels",
                transformer.audio_latent_channels,
            )
            check_matches(
                f"data.cache_dir ({root}) text_dim",
                self.cache.text_dim,
                "model.text_dim",
                transformer.config.video.text_dim,
            )
        self.check_buckets()


class ExportWeights(str, enum.Enum):
    """Which weights :class:`ExportModel` writes: the EMA shadow (when the run keeps one) or the raw."""

    EMA = "ema"
    RAW = "raw"


class ExportModel(L.Callback):
    """Write the trained transformer into ``dirpath`` when training ends (the next stage's init_from).

    A module with an ``export_model(folder)`` method (the LoRA module) writes its own export.
    """

    def __init__(self, dirpath: str, weights: ExportWeights | str = ExportWeights.EMA) -> None:
        if not isinstance(dirpath, (str, os.PathLike)) or not str(dirpath):
            raise SkyReelsError(f"ExportModel.dirpath: expected a folder path, got {dirpath!r}")
        self.dirpath = str(dirpath)
        try:
            self.weights = ExportWeights(weights)
        except ValueError:
            raise SkyReelsError(
                f"ExportModel.weights: expected one of {[w.value for w in ExportWeights]}, got {weights!r}"
            ) from None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Sharded weights (SkyReelsParallelStrategy): every rank takes part in gathering them and
        # rank 0 writes; otherwise rank 0 alone exports.
        from skyreels_v4.scale import is_sharded

        sharded = is_sharded(pl_module.parameters())
        if not (sharded or trainer.is_global_zero):
            return
        export = getattr(pl_module, "export_model", None)
        if callable(export):
            export(self.dirpath)
            return
        model = pl_module.export_transformer(use_ema=self.weights is ExportWeights.EMA)  # type: ignore[operator]
        if model is not None:
            model.save_pretrained(self.dirpath)


def merge_branches(
    video_folder: str | os.PathLike[str], audio_folder: str | os.PathLike[str], out: str | os.PathLike[str]
) -> Path:
    """The joint stage's starting model (paper 4.3): ``video.*`` weights from ``video_folder`` (the last
    video-pretrain stage), ``audio.*`` from ``audio_folder`` (audio pretrain), the audio-video
    exchanges (``exchanges.*``) from ``video_folder`` (the video model carried them from stage 1).

    Both folders must hold the same transformer configuration and prediction type.
    """
    from skyreels_v4.model import SkyReelsV4Transformer

    video = SkyReelsV4Transformer.from_pretrained(video_folder)
    audio = SkyReelsV4Transformer.from_pretrained(audio_folder)
    if video.config != audio.config:
        raise ConfigMismatchError(
            f"audio_folder: {audio_folder} holds a different transformer config than video_folder "
            f"{video_folder}; both stages must train the same architecture"
        )
    if video.prediction is not audio.prediction:
        raise ConfigMismatchError(
            f"audio_folder: {audio_folder} predicts {audio.prediction.value}, "
            f"video_folder {video_folder} predicts {video.prediction.value}"
        )
    with torch.no_grad():
        video.audio.load_state_dict(audio.audio.state_dict())
    return video.save_pretrained(out)


def image_samples(world: Any, *, length: int, seed: int, split: Any = "train") -> Iterator[CacheSample]:
    """One-frame clips (images) of the procedural world: each clip's first frame with its first
    frame's worth of audio (``sample_rate / fps`` samples), ids prefixed ``image-``."""
    samples_per_frame = max(1, round(world.sample_rate / world.fps))
    for sample in world_samples(world, length=length, seed=seed, split=split):
        yield dataclasses.replace(
            sample,
            id=f"image-{sample.id}",
            video=sample.video[:, :1].contiguous(),
            audio=sample.audio[:, :samples_per_frame].contiguous(),
        )


# The tiny caches: name -> [(kind, frames, clips, seed)]
TINY_CACHES: dict[str, list[tuple[str, int, int, int]]] = {
    "images": [("image", 9, 8, 0)],
    "mixed": [("image", 9, 8, 1), ("video", 9, 8, 2)],
    "videos": [("video", 9, 8, 3), ("video", 13, 8, 4)],
}


def build_tiny_caches(out: str | os.PathLike[str], *, size: int = 16, seed: int = 0) -> dict[str, Path]:
    """The tiny recipes' caches in ``out/{images, mixed, videos}`` (kept when already complete).

    Procedural world at ``size`` px, 16 fps, 16 kHz; pixel-unshuffle video codec (4x time, 4x4 space),
    framed-DCT audio codec, the embedded text encoder (32-d), as the quickstart uses.
    """
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
    from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec
    from skyreels_v4.world import WorldConfig

    video_vae = PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4)
    audio_vae = FrameAudioCodec(sample_rate=16000, hop_length=256)
    text_encoder = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32, seed=seed))
    folders = {}
    for name, parts in TINY_CACHES.items():
        folder = Path(out) / name
        folders[name] = folder
        if (folder / CACHE_INDEX).exists():
            continue
        streams = []
        for kind, frames, clips, part_seed in parts:
            world = WorldConfig(size=size, num_frames=frames, sample_rate=16000, fps=16.0)
            make = image_samples if kind == "image" else world_samples
            streams.append(make(world, length=clips, seed=seed * 1000 + part_seed))
        build_latent_cache(
            itertools.chain(*streams),
            folder,
            video_vae=video_vae,
            audio_vae=audio_vae,
            text_encoder=text_encoder,
            progress=False,
        )
    return folders
