"""Video stages of paper 3.4.2: scan, shot segmentation (+ the merge judge), basic quality,
motion quality (magnitude, camera stability, frame drops) and the watermark / text-overlay hooks.

Measured values (all per clip):
    blur: median Laplacian variance of grey frames at ``analysis_width`` (low = blurry).
    contrast: median RMS contrast (std of grey levels / 255).
    exposure: median mean grey level / 255.
    motion: mean |frame difference| / 255 (``frame_difference``) or mean Farneback flow
        magnitude in % of the frame width per frame (``farneback``).
    jitter: camera shake, mean |second difference| of the global translation (phase correlation)
        in % of the frame width per frame; a steady pan has ~0, a hand-held shake several.
    frame_drop_ratio: share of frames that repeat the previous one while both neighbours move.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyreels_v4.data.manifest import Row, new_row
from skyreels_v4.data.media import probe, read_frames
from skyreels_v4.data.stage import StageContext, StageKind, StageResult, load_hook, register_stage
from skyreels_v4.errors import FileFormatError, NonFiniteError

__all__ = [
    "MotionConfig",
    "MotionMethod",
    "OverlayConfig",
    "ScanConfig",
    "ShotsConfig",
    "VideoQualityConfig",
    "camera_jitter",
    "edge_sharpness",
    "frame_drop_ratio",
    "laplacian_variance",
    "motion_magnitude",
]


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    extensions: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm")


def clip_id_for(relative: str) -> str:
    """A stable id from a relative path: ``a/b c.mp4`` -> ``a__b_c``."""
    stem = relative.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", stem.replace("/", "__"))


@register_stage("scan_videos", StageKind.SOURCE, ScanConfig)
def scan_videos(config: ScanConfig, context: StageContext) -> list[Row]:
    """One row per video file under the input folder (recursively), spanning the whole file."""
    rows = []
    extensions = {e.lower() for e in config.extensions}
    for path in sorted(context.input_dir.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        relative = path.relative_to(context.input_dir).as_posix()
        try:
            info = probe(path)
        except FileFormatError as error:
            row = new_row(id=clip_id_for(relative), source=relative, start_s=0.0, end_s=0.0)
            row.update(kept=False, drop_reason=f"unreadable: {error.problem}", dropped_by="scan_videos")
            rows.append(row)
            continue
        row = new_row(
            id=clip_id_for(relative),
            source=relative,
            start_s=0.0,
            end_s=info.duration_s,
            fps=info.fps,
            width=info.width,
            height=info.height,
            has_audio=info.has_audio,
        )
        if not info.has_video:
            row.update(kept=False, drop_reason="no video stream", dropped_by="scan_videos")
        rows.append(row)
    return rows


@dataclass(frozen=True, kw_only=True)
class ShotsConfig:
    """Shot detector hook (default PySceneDetect ContentDetector) and segment judge hook."""

    detector: Any = "skyreels_v4.data.hooks:ContentShotDetector"
    judge: Any = "skyreels_v4.data.hooks:MergeShortSegments"


@register_stage("shots", StageKind.EXPAND, ShotsConfig)
def shots(row: Row, config: ShotsConfig, context: StageContext) -> list[dict[str, Any]]:
    """Split a clip at its shot boundaries, then let the judge merge shots into complete clips."""
    path = context.source_path(row["source"])
    found = [float(t) for t in load_hook(config.detector).cuts(path, row["start_s"], row["end_s"])]
    if not all(math.isfinite(t) for t in found):
        raise NonFiniteError(
            f"stage 'shots': detector {config.detector!r} gave cut times {found} for {row['id']!r}"
        )
    cuts = sorted(t for t in found if row["start_s"] < t < row["end_s"])
    bounds = [row["start_s"], *cuts, row["end_s"]]
    judge = load_hook(config.judge)
    segments: list[list[float]] = []
    for a, b in itertools.pairwise(bounds):
        if segments and judge.merge(path, (segments[-1][0], segments[-1][1]), (a, b)):
            segments[-1][1] = b
        else:
            segments.append([a, b])
    return [
        {"id": f"{row['id']}/s{n:03d}", "start_s": a, "end_s": b, "shot_index": n, "num_shots": len(segments)}
        for n, (a, b) in enumerate(segments)
    ]


@dataclass(frozen=True, kw_only=True)
class VideoQualityConfig:
    """Thresholds of the basic-quality filter. ``min_blur`` (Laplacian variance) is off by default:
    it also scores flat, low-contrast but sharp scenes as blurry; ``min_sharpness`` decides."""

    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    min_short_side: int = 64
    min_aspect: float = 0.5
    max_aspect: float = 2.5
    min_blur: float = 0.0
    min_sharpness: float = 0.08
    min_contrast: float = 0.01
    min_highlight: float = 0.25
    max_shadow: float = 0.75
    num_samples: int = 6
    analysis_width: int = 256


def laplacian_variance(gray: np.ndarray) -> float:
    """The classic blur score: variance of the Laplacian of a grey frame (scales with contrast)."""
    import cv2

    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def edge_sharpness(gray: np.ndarray, *, top: float = 0.05, min_gradient: float = 8.0) -> float:
    """Contrast-free sharpness: RMS Laplacian / RMS Sobel gradient over the strongest ``top``
    share of edge pixels. A step edge blurred by a Gaussian of width s scores about 1/s, whatever
    its contrast; a frame without any edge (max gradient < ``min_gradient``) scores 0."""
    import cv2

    frame = gray.astype(np.float64)
    gradient = np.hypot(cv2.Sobel(frame, cv2.CV_64F, 1, 0), cv2.Sobel(frame, cv2.CV_64F, 0, 1))
    if gradient.max() < min_gradient:
        return 0.0
    edges = gradient >= np.quantile(gradient, 1 - top)
    laplacian = cv2.Laplacian(frame, cv2.CV_64F)
    return float(np.sqrt((laplacian[edges] ** 2).mean() / (gradient[edges] ** 2).mean()))


@register_stage("video_quality", StageKind.MAP, VideoQualityConfig)
def video_quality(row: Row, config: VideoQualityConfig, context: StageContext) -> StageResult:
    """Basic quality of 3.4.2: duration, resolution, aspect, blur, contrast, exposure.

    Exposure is judged on the extremes: a clip is underexposed when even its highlights (99th
    percentile grey level) stay below ``min_highlight``, overexposed when even its shadows (1st
    percentile) exceed ``max_shadow``; a dark background with bright subjects passes.
    """
    duration = row["end_s"] - row["start_s"]
    width, height = int(row.get("width", 0)), int(row.get("height", 0))
    values: dict[str, Any] = {"duration_s": duration, "aspect": width / height if height else 0.0}
    checks = [
        (duration >= config.min_duration_s, f"duration<{config.min_duration_s:g}s"),
        (duration <= config.max_duration_s, f"duration>{config.max_duration_s:g}s"),
        (min(width, height) >= config.min_short_side, f"short_side<{config.min_short_side}"),
        (config.min_aspect <= values["aspect"] <= config.max_aspect, "aspect"),
    ]
    for ok, reason in checks:
        if not ok:
            return StageResult(values=values, drop=reason)
    fps = float(row.get("fps") or 25.0)
    step = max(1, int(duration * fps) // config.num_samples)
    frames = read_frames(
        context.source_path(row["source"]),
        row["start_s"],
        row["end_s"],
        width=min(config.analysis_width, width),
        step=step,
    )
    flat = frames.reshape(len(frames), -1)
    values.update(
        blur=float(np.median([laplacian_variance(f) for f in frames])),
        sharpness=float(np.median([edge_sharpness(f) for f in frames])),
        contrast=float(np.median(flat.std(axis=1)) / 255.0),
        exposure=float(np.median(flat.mean(axis=1)) / 255.0),
        highlight=float(np.median(np.quantile(flat, 0.99, axis=1)) / 255.0),
        shadow=float(np.median(np.quantile(flat, 0.01, axis=1)) / 255.0),
    )
    for ok, reason in [
        (values["highlight"] >= config.min_highlight, f"underexposed(highlight<{config.min_highlight:g})"),
        (values["shadow"] <= config.max_shadow, f"overexposed(shadow>{config.max_shadow:g})"),
        (values["sharpness"] >= config.min_sharpness, f"blurry(sharpness<{config.min_sharpness:g})"),
        (values["blur"] >= config.min_blur, f"blurry(laplacian_var<{config.min_blur:g})"),
        (values["contrast"] >= config.min_contrast, f"low_contrast<{config.min_contrast:g}"),
    ]:
        if not ok:
            return StageResult(values=values, drop=reason)
    return StageResult(values=values)


class MotionMethod(enum.Enum):
    FRAME_DIFFERENCE = "frame_difference"
    FARNEBACK = "farneback"


@dataclass(frozen=True, kw_only=True)
class MotionConfig:
    method: str = MotionMethod.FRAME_DIFFERENCE.value
    min_motion: float = 0.001
    max_motion: float = 0.25
    max_jitter: float = 2.0
    max_frame_drop_ratio: float = 0.05
    analysis_width: int = 128
    max_frames: int = 240
    slow_below: float = 0.02  # motion_label thresholds (static < min_motion <= slow < slow_below <= fast)

    def __post_init__(self) -> None:
        MotionMethod(self.method)


def motion_magnitude(frames: np.ndarray, method: MotionMethod = MotionMethod.FRAME_DIFFERENCE) -> float:
    """Mean motion of grey frames ``[F, H, W]`` uint8 (see the module docstring for units)."""
    if len(frames) < 2:
        return 0.0
    if method is MotionMethod.FRAME_DIFFERENCE:
        diffs = np.abs(np.diff(frames.astype(np.int16), axis=0))
        return float(diffs.mean() / 255.0)
    import cv2

    mags = []
    for a, b in itertools.pairwise(frames):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mags.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(mags) / frames.shape[2] * 100.0)


def global_translation(frames: np.ndarray) -> np.ndarray:
    """Per-step global shift ``[F-1, 2]`` (dx, dy in pixels) by phase correlation."""
    import cv2

    window = cv2.createHanningWindow((frames.shape[2], frames.shape[1]), cv2.CV_32F)
    shifts = []
    for a, b in itertools.pairwise(frames):
        (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32), window)
        shifts.append((dx, dy))
    return np.asarray(shifts, dtype=np.float64).reshape(-1, 2)


def camera_jitter(frames: np.ndarray) -> float:
    """Camera shake in % of the width per frame: median |second difference| of the global shift.

    The median, not the mean: a cut or a bounce changes the shift once, a shake at every frame."""
    shifts = global_translation(frames)
    if len(shifts) < 2:
        return 0.0
    return float(np.median(np.linalg.norm(np.diff(shifts, axis=0), axis=1)) / frames.shape[2] * 100.0)


def frame_drop_ratio(frames: np.ndarray, *, repeat_level: float = 0.5, moving_level: float = 2.0) -> float:
    """Share of frames that repeat their predecessor (mean |diff| < ``repeat_level`` grey levels)
    while the steps before and after move (> ``moving_level``): a dropped-and-duplicated frame."""
    if len(frames) < 4:
        return 0.0
    diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2))
    repeats = (diff[1:-1] < repeat_level) & (diff[:-2] > moving_level) & (diff[2:] > moving_level)
    return float(repeats.sum() / len(diff))


@register_stage("motion", StageKind.MAP, MotionConfig)
def motion(row: Row, config: MotionConfig, context: StageContext) -> StageResult:
    """Motion quality of 3.4.2: magnitude, camera stability, frame drops, and a motion label."""
    fps = float(row.get("fps") or 25.0)
    step = max(1, int((row["end_s"] - row["start_s"]) * fps) // config.max_frames + 1)
    frames = read_frames(
        context.source_path(row["source"]),
        row["start_s"],
        row["end_s"],
        width=config.analysis_width,
        step=step,
    )
    magnitude = motion_magnitude(frames, MotionMethod(config.method))
    label = (
        "static" if magnitude < config.min_motion else ("slow" if magnitude < config.slow_below else "fast")
    )
    values = {
        "motion": magnitude,
        "motion_label": label,
        "jitter": camera_jitter(frames),
        "frame_drop_ratio": frame_drop_ratio(frames) if step == 1 else 0.0,
    }
    for ok, reason in [
        (magnitude >= config.min_motion, f"static(motion<{config.min_motion:g})"),
        (magnitude <= config.max_motion, f"motion>{config.max_motion:g}"),
        (values["frame_drop_ratio"] <= config.max_frame_drop_ratio, "frame_drops"),
        (values["jitter"] <= config.max_jitter, f"shaky(jitter>{config.max_jitter:g})"),
    ]:
        if not ok:
            return StageResult(values=values, drop=reason)
    return StageResult(values=values)


@dataclass(frozen=True, kw_only=True)
class OverlayConfig:
    """Watermark / logo / text-overlay hooks; a clip scoring above ``max_score`` is dropped."""

    watermark: Any = "skyreels_v4.data.hooks:FlatScore"
    text_overlay: Any = "skyreels_v4.data.hooks:FlatScore"
    max_score: float = 0.5
    num_samples: int = 3


@register_stage("overlays", StageKind.MAP, OverlayConfig)
def overlays(row: Row, config: OverlayConfig, context: StageContext) -> StageResult:
    """Content quality of 3.4.2 through hooks (weight-free default: no detector, score 0)."""
    fps = float(row.get("fps") or 25.0)
    step = max(1, int((row["end_s"] - row["start_s"]) * fps) // config.num_samples)
    frames = read_frames(
        context.source_path(row["source"]), row["start_s"], row["end_s"], gray=False, step=step
    )
    values = {
        "watermark_score": float(load_hook(config.watermark).score(frames)),
        "text_overlay_score": float(load_hook(config.text_overlay).score(frames)),
    }
    if values["watermark_score"] > config.max_score:
        return StageResult(values=values, drop="watermark")
    if values["text_overlay_score"] > config.max_score:
        return StageResult(values=values, drop="text_overlay")
    return StageResult(values=values)
