"""Audio-video synchronisation filter of paper 3.4.2: keep a clip only if
``|offset| <= 3`` frames, ``confidence > 1.5`` and its mean volume >= -60 dB.

The estimator is a hook (:class:`SyncEstimator`; SyncNet in the paper). The weight-free default,
:class:`OnsetMotionSync`, cross-correlates two per-frame signals:

* audio onset strength: the positive change of the log energy (dB) of the audio inside each video
  frame's interval;
* visual motion change: the mean magnitude of the change of Farneback optical flow between
  consecutive frame pairs (an impact or a mouth opening changes the motion, a steady pan does not).

Both are z-scored; ``c[k] = mean_t v[t]·a[t+k]`` for lags ``|k| <= max_lag``. The offset is the lag
of the peak (positive: the audio comes later than the picture), and the confidence is the peak's
height above the median of ``c`` in units of the median absolute deviation, i.e. how far the best
alignment stands out from the others. It is not SyncNet's scale, but it plays the same role, so the
paper's thresholds are kept; ``docs/data-pipeline.md`` shows the scores of shifted clips.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from skyreels_v4.data.audio_measures import mean_volume_db
from skyreels_v4.data.manifest import Row
from skyreels_v4.data.media import read_audio, read_frames
from skyreels_v4.data.stage import StageContext, StageKind, StageResult, load_hook, register_stage

__all__ = ["OnsetMotionSync", "SyncConfig", "SyncEstimate", "SyncEstimator", "audio_onsets", "motion_changes"]


@dataclass(frozen=True, kw_only=True)
class SyncEstimate:
    offset_frames: int
    confidence: float


class SyncEstimator(Protocol):
    """Offset (video frames, + = audio late) and confidence of a clip's audio against its video."""

    def estimate(self, path: Path, start_s: float, end_s: float, fps: float) -> SyncEstimate: ...


def audio_onsets(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """Per-video-frame audio onset strength ``[num_frames]``: positive change of frame energy (dB)."""
    edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(np.int64)
    energy = np.array(
        [
            np.mean(np.square(audio[a:b], dtype=np.float64)) if b > a else 0.0
            for a, b in itertools.pairwise(edges)
        ]
    )
    level = 10 * np.log10(energy + 1e-10)
    return np.maximum(np.diff(level, prepend=level[:1]), 0.0)


def motion_changes(gray: np.ndarray) -> np.ndarray:
    """Per-frame visual motion change ``[F]``: |flow(t→t+1) - flow(t-1→t)| averaged over pixels, so
    an impact between frames t and t+1 scores at t, the frame whose audio interval holds it."""
    import cv2

    flows = [
        cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 3, 5, 1.1, 0) for a, b in itertools.pairwise(gray)
    ]
    change = np.zeros(len(gray))
    for t in range(1, len(gray) - 1):
        change[t] = float(np.linalg.norm(flows[t] - flows[t - 1], axis=-1).mean())
    return change


def cross_correlation_offset(visual: np.ndarray, audio: np.ndarray, max_lag: int) -> SyncEstimate:
    """Peak lag and robust confidence of ``c[k] = mean_t v[t]·a[t+k]`` (module docstring)."""

    def zscore(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() + 1e-8)

    v, a = zscore(visual), zscore(audio)
    lags = np.arange(-max_lag, max_lag + 1)
    n = len(v)
    c = np.array([np.mean(v[max(0, -k) : n - max(0, k)] * a[max(0, k) : n + min(0, k)]) for k in lags])
    peak = int(np.argmax(c))
    median = float(np.median(c))
    spread = float(np.median(np.abs(c - median))) * 1.4826 + 1e-6
    return SyncEstimate(offset_frames=int(lags[peak]), confidence=float((c[peak] - median) / spread))


@dataclass(frozen=True, kw_only=True)
class OnsetMotionSync:
    """The weight-free default estimator (module docstring)."""

    max_lag: int = 15
    analysis_width: int = 96
    sample_rate: int = 16000

    def estimate(self, path: Path, start_s: float, end_s: float, fps: float) -> SyncEstimate:
        gray = read_frames(path, start_s, end_s, width=self.analysis_width)
        audio = read_audio(path, start_s, end_s, sample_rate=self.sample_rate)[0]
        max_lag = min(self.max_lag, len(gray) // 3)
        onsets = audio_onsets(audio, self.sample_rate, fps, len(gray))
        return cross_correlation_offset(motion_changes(gray), onsets, max_lag)


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    max_offset_frames: int = 3
    min_confidence: float = 1.5
    min_volume_db: float = -60.0
    estimator: Any = "skyreels_v4.data.sync:OnsetMotionSync"
    categories: tuple[str, ...] = ()  # empty: every clip with audio; the paper: ("speech", "singing")


@register_stage("sync", StageKind.MAP, SyncConfig)
def sync(row: Row, config: SyncConfig, context: StageContext) -> StageResult:
    if not row.get("has_audio", False):
        return StageResult()
    if config.categories and row.get("category") not in config.categories:
        return StageResult()
    path = context.source_path(row["source"])
    volume = row.get("mean_volume_db")
    if volume is None:
        volume = mean_volume_db(read_audio(path, row["start_s"], row["end_s"], sample_rate=16000))
    estimate = load_hook(config.estimator).estimate(
        path, row["start_s"], row["end_s"], float(row.get("fps") or 25)
    )
    values = {
        "sync_offset_frames": estimate.offset_frames,
        "sync_confidence": estimate.confidence,
        "mean_volume_db": float(volume),
    }
    if volume < config.min_volume_db:
        return StageResult(values=values, drop=f"quiet(volume<{config.min_volume_db:g}dB)")
    if abs(estimate.offset_frames) > config.max_offset_frames:
        return StageResult(values=values, drop=f"out_of_sync(|offset|>{config.max_offset_frames})")
    if not estimate.confidence > config.min_confidence:
        return StageResult(values=values, drop=f"sync_unsure(confidence<={config.min_confidence:g})")
    return StageResult(values=values)
