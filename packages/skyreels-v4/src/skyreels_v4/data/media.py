"""Decoding for the data pipeline: probe a file, read a span's frames (small, grey or RGB) and its
audio (mono float32 at a chosen rate) with PyAV, and cut a span into a new mp4.

Frames belong to a span ``[start_s, end_s)`` by their presentation time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from skyreels_v4.errors import FileFormatError

__all__ = ["MediaInfo", "cut_clip", "probe", "read_audio", "read_frames"]


@dataclass(frozen=True, kw_only=True)
class MediaInfo:
    duration_s: float
    has_video: bool
    has_audio: bool
    fps: float = 0.0
    width: int = 0
    height: int = 0
    sample_rate: int = 0


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Streams and duration of ``path``; an unreadable file raises ``FileFormatError``."""
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            duration = container.duration / av.time_base if container.duration else 0.0
            fps = float(video.average_rate or video.guessed_rate or 0) if video is not None else 0.0
            return MediaInfo(
                duration_s=float(duration),
                has_video=video is not None,
                has_audio=audio is not None,
                fps=fps,
                width=int(video.codec_context.width) if video is not None else 0,
                height=int(video.codec_context.height) if video is not None else 0,
                sample_rate=int(audio.codec_context.sample_rate) if audio is not None else 0,
            )
    except (av.error.FFmpegError, IndexError) as error:
        raise FileFormatError(path, f"not a readable media file ({error})") from error


def read_frames(
    path: str | os.PathLike[str],
    start_s: float,
    end_s: float,
    *,
    width: int | None = None,
    gray: bool = True,
    step: int = 1,
) -> np.ndarray:
    """Frames of ``[start_s, end_s)``: ``[F, H, W]`` (grey) or ``[F, H, W, 3]`` (RGB) uint8.

    ``width`` resizes (keeping the aspect, even height); ``step`` keeps every step-th frame.
    """
    frames = []
    fmt = "gray" if gray else "rgb24"
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if start_s > 0:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
            index = 0
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else 0.0
                if t < start_s - 1e-6:
                    continue
                if t >= end_s - 1e-6:
                    break
                if index % step == 0:
                    if width is not None:
                        height = max(2, round(frame.height * width / frame.width / 2) * 2)
                        frame = frame.reformat(width=width, height=height, format=fmt)
                        frames.append(frame.to_ndarray())
                    else:
                        frames.append(frame.to_ndarray(format=fmt))
                index += 1
    except (av.error.FFmpegError, IndexError) as error:
        raise FileFormatError(path, f"cannot decode video ({error})") from error
    if not frames:
        raise FileFormatError(path, f"no video frames in [{start_s:.3f}, {end_s:.3f}) s")
    return np.stack(frames)


def read_audio(
    path: str | os.PathLike[str], start_s: float, end_s: float, *, sample_rate: int, channels: int = 1
) -> np.ndarray:
    """Audio of ``[start_s, end_s)`` resampled to ``sample_rate``: ``[channels, S]`` float32.

    Missing samples at the end (a short stream) are zero-padded to the span's length.
    """
    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
    chunks: list[np.ndarray] = []
    first_t: float | None = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise FileFormatError(path, "expected an audio stream, found none")
            stream = container.streams.audio[0]
            if start_s > 0:
                container.seek(int(max(0.0, start_s - 0.5) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and first_t is None:
                    first_t = float(frame.pts * stream.time_base)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                if frame.pts is not None and float(frame.pts * stream.time_base) > end_s + 0.1:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except av.error.FFmpegError as error:
        raise FileFormatError(path, f"cannot decode audio ({error})") from error
    audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    offset = round((start_s - (first_t or 0.0)) * sample_rate)
    length = round((end_s - start_s) * sample_rate)
    if offset < 0:
        audio = np.concatenate([np.zeros((channels, -offset), np.float32), audio], axis=1)
        offset = 0
    audio = audio[:, offset : offset + length]
    if audio.shape[1] < length:
        audio = np.pad(audio, ((0, 0), (0, length - audio.shape[1])))
    return np.ascontiguousarray(audio, dtype=np.float32)


def cut_clip(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    start_s: float,
    end_s: float,
    *,
    silence_rate: int | None = None,
) -> Path:
    """Re-encode ``[start_s, end_s)`` of ``source`` (video and its audio, if any) into ``target``.

    ``silence_rate``: give a source without audio a silent track at that rate (None: no track).

    Re-encoding (rather than stream copy) makes the cut frame-exact: H.264 keyframes rarely fall
    on a shot boundary.
    """
    from skyreels_v4.world.media import write_mp4

    info = probe(source)
    frames = read_frames(source, start_s, end_s, width=None, gray=False)
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    audio = None
    rate = info.sample_rate
    if info.has_audio:
        audio = np.clip(read_audio(source, start_s, end_s, sample_rate=info.sample_rate, channels=1), -1, 1)
    elif silence_rate is not None:
        rate = int(silence_rate)
        audio = np.zeros((1, round(len(frames) / info.fps * rate)), np.float32)
    write_mp4(target, frames, info.fps, audio, rate if audio is not None else None)
    return Path(target)
