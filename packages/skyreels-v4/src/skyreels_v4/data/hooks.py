"""Model hooks of the data pipeline (paper 3.4): interfaces plus the weight-free defaults.

Every weighted model of section 3.4 (TransNetV2, the VLM segment judge, VideoCLIP, Qwen3-Omni,
Whisper, SyncNet, IQA and watermark classifiers, captioners) is a ``Protocol`` here. A stage names
its hook as ``"module:Class"`` (plus kwargs) in the pipeline YAML, so a real model is a class
anywhere on the path. The defaults below need no weights; the transformers adapters (Whisper,
CLIP-style embedders) live in :mod:`skyreels_v4.data.hf_hooks`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from skyreels_v4.errors import FileFormatError

__all__ = [
    "AudioCaptioner",
    "AudioClassifier",
    "ClipEmbedder",
    "ContentShotDetector",
    "FlatScore",
    "ImageQualityScorer",
    "MergeShortSegments",
    "OverlayDetector",
    "SegmentJudge",
    "ShotDetector",
    "SidecarCaptioner",
    "SpectralAudioClassifier",
    "TextImageMatcher",
    "ThumbnailEmbedder",
    "Transcriber",
    "VideoCaptioner",
]


@runtime_checkable
class ShotDetector(Protocol):
    """Shot boundaries of ``path`` inside ``[start_s, end_s)``, as cut times in seconds (TransNetV2 hook)."""

    def cuts(self, path: Path, start_s: float, end_s: float) -> list[float]: ...


@runtime_checkable
class SegmentJudge(Protocol):
    """Whether the shot ``[b0, b1)`` continues the clip ``[a0, a1)`` (the paper's VLM judge)."""

    def merge(self, path: Path, previous: tuple[float, float], current: tuple[float, float]) -> bool: ...


class OverlayDetector(Protocol):
    """A score in [0, 1] that a clip carries a watermark / logo / text overlay (frames [F, H, W, 3])."""

    def score(self, frames: np.ndarray) -> float: ...


class ClipEmbedder(Protocol):
    """One L2-normalised embedding ``[D]`` for RGB frames ``[F, H, W, 3]`` uint8 (VideoCLIP hook)."""

    def embed(self, frames: np.ndarray) -> np.ndarray: ...


class TextImageMatcher(Protocol):
    """Cosine similarities ``[T]`` between RGB frames ``[F, H, W, 3]`` uint8 and each of ``texts``
    (CLIP-style; :class:`skyreels_v4.data.hf_hooks.CLIPEmbedder`)."""

    def similarity(self, frames: np.ndarray, texts: Sequence[str]) -> np.ndarray: ...


class ImageQualityScorer(Protocol):
    """An IQA / aesthetic score for one RGB image ``[H, W, 3]`` uint8 (higher is better)."""

    def score(self, image: np.ndarray) -> float: ...


class AudioClassifier(Protocol):
    """One of ``sfx``, ``music``, ``speech``, ``singing`` for mono audio (Qwen3-Omni hook)."""

    def classify(self, audio: np.ndarray, sample_rate: int) -> str: ...


class Transcriber(Protocol):
    """The words spoken or sung in mono audio (Whisper hook)."""

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str: ...


class VideoCaptioner(Protocol):
    """``{"short", "long", "visual", "text"}`` descriptions of a clip (VLM hook); any may be absent."""

    def describe_video(self, path: Path, start_s: float, end_s: float) -> dict[str, str]: ...


class AudioCaptioner(Protocol):
    """``{"sfx": ..., "bgm": ..., "dialogue": ..., "singing": ...}`` for a clip's audio (Qwen3-Omni hook)."""

    def describe_audio(self, path: Path, start_s: float, end_s: float) -> dict[str, str]: ...


# ---- weight-free defaults ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ContentShotDetector:
    """PySceneDetect's ContentDetector (HSV change between consecutive frames above ``threshold``)."""

    threshold: float = 27.0
    min_scene_len: int = 8

    def cuts(self, path: Path, start_s: float, end_s: float) -> list[float]:
        from scenedetect import ContentDetector, detect

        detector = ContentDetector(threshold=self.threshold, min_scene_len=self.min_scene_len)
        scenes = detect(str(path), detector, start_time=float(start_s), end_time=float(end_s))
        return [float(scene[0].seconds) for scene in scenes[1:]]


@dataclass(frozen=True, kw_only=True)
class MergeShortSegments:
    """Merge a shot shorter than ``min_s`` into the clip before it (a weight-free stand-in for the
    VLM that decides what is semantically complete)."""

    min_s: float = 1.0

    def merge(self, path: Path, previous: tuple[float, float], current: tuple[float, float]) -> bool:
        return current[1] - current[0] < self.min_s


@dataclass(frozen=True, kw_only=True)
class FlatScore:
    """A detector that scores every input the same (``value``): "no watermark model installed"."""

    value: float = 0.0

    def score(self, frames: np.ndarray) -> float:
        return float(self.value)


@dataclass(frozen=True, kw_only=True)
class ThumbnailEmbedder:
    """Weight-free embedding: the mean frame shrunk to ``size`` x ``size`` RGB, centred, L2-normalised."""

    size: int = 8

    def embed(self, frames: np.ndarray) -> np.ndarray:
        import cv2

        frames = frames[None] if frames.ndim == 3 else frames
        mean = frames.astype(np.float32).mean(axis=0)
        small = cv2.resize(mean, (self.size, self.size), interpolation=cv2.INTER_AREA).reshape(-1)
        small = small - small.mean()
        return small / max(float(np.linalg.norm(small)), 1e-8)


@dataclass(frozen=True, kw_only=True)
class SpectralAudioClassifier:
    """Weight-free category guess: ``speech`` when silero-vad finds speech in more than
    ``speech_ratio`` of the clip, ``music`` when the sound is sustained and tonal (low spectral
    flatness in most frames), else ``sfx``. It cannot tell singing from speech: use a model hook."""

    speech_ratio: float = 0.2
    tonal_flatness: float = 0.1
    sustained_ratio: float = 0.6

    def classify(self, audio: np.ndarray, sample_rate: int) -> str:
        from skyreels_v4.data.audio_measures import frame_spectra, speech_fraction

        if speech_fraction(audio, sample_rate) > self.speech_ratio:
            return "speech"
        power = frame_spectra(audio, sample_rate)
        energy = power.sum(axis=1)
        active = energy > energy.max() * 1e-3 if energy.size else energy
        if not active.any():
            return "sfx"
        flat = np.exp(np.log(power[active] + 1e-12).mean(axis=1)) / (power[active].mean(axis=1) + 1e-12)
        tonal = (flat < self.tonal_flatness).mean()
        return "music" if active.mean() >= self.sustained_ratio and tonal > 0.5 else "sfx"


@dataclass(frozen=True, kw_only=True)
class SidecarCaptioner:
    """Captions a user already has: ``<video>.json`` beside the source with any of the keys
    ``short``, ``long``, ``visual``, ``text``, ``sfx``, ``bgm``, ``dialogue``, ``singing`` (a missing
    sidecar gives no description). Implements both :class:`VideoCaptioner` and :class:`AudioCaptioner`."""

    suffix: str = ".json"

    def _read(self, path: Path) -> dict[str, str]:
        sidecar = path.with_suffix(self.suffix)
        if not sidecar.is_file():
            return {}
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise FileFormatError(sidecar, f"expected a caption sidecar JSON object ({error})") from error
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise FileFormatError(sidecar, "expected a JSON object of strings")
        return data

    def describe_video(self, path: Path, start_s: float, end_s: float) -> dict[str, str]:
        data = self._read(path)
        return {k: data[k] for k in ("short", "long", "visual", "text") if k in data}

    def describe_audio(self, path: Path, start_s: float, end_s: float) -> dict[str, str]:
        data = self._read(path)
        return {k: data[k] for k in ("sfx", "bgm", "dialogue", "singing") if k in data}
