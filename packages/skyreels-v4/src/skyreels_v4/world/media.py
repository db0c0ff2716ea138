"""Write clips to disk, atomically: .mp4 (H.264 video + AAC audio, via PyAV) and .wav.

Every writer renders into a temporary file in the destination folder and then ``os.replace``s
it, so a reader never sees a half-written file and an interrupted run leaves no partial output.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import soundfile

from skyreels_v4.io.files import atomic_path

__all__ = ["atomic_path", "write_mp4", "write_wav"]

_AAC_FRAME = 1024  # samples per AAC frame


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write ``audio [C, S]`` (float in [-1, 1], C = 1 or 2) as 16-bit PCM WAV."""
    audio = _check_audio(audio)
    with atomic_path(path, ".wav") as temp:
        soundfile.write(temp, audio.T, sample_rate, subtype="PCM_16", format="WAV")


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    *,
    crf: int = 18,
) -> None:
    """Write ``frames [F, H, W, 3]`` uint8 (and ``audio [C, S]``, 1 or 2 channels) as an .mp4.

    H.264 (libx264, yuv420p, so H and W must be even) and AAC at ``sample_rate``.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(
            f"frames: expected even H and W for yuv420p, got {frames.shape[1]}x{frames.shape[2]}"
        )
    if audio is not None:
        audio = _check_audio(audio)
        if sample_rate is None:
            raise ValueError("sample_rate: expected the audio's sample rate, got None")
    with atomic_path(path, ".mp4") as temp, av.open(str(temp), mode="w", format="mp4") as container:
        video_stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(10000))
        video_stream.width = frames.shape[2]
        video_stream.height = frames.shape[1]
        video_stream.pix_fmt = "yuv420p"
        video_stream.options = {"crf": str(crf)}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono" if audio.shape[0] == 1 else "stereo"
        for frame in frames:
            # libx264 is not bit-reproducible here even single-threaded (tested): the gallery's
            # mp4 files decode to the same clip within a few levels, not to identical bytes.
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            container.mux(video_stream.encode(picture))
        container.mux(video_stream.encode(None))
        if audio_stream is not None:
            layout = "mono" if audio.shape[0] == 1 else "stereo"
            for start in range(0, audio.shape[1], _AAC_FRAME):
                chunk = np.ascontiguousarray(audio[:, start : start + _AAC_FRAME], dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate = sample_rate
                frame.pts = start
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))


def _check_audio(audio: np.ndarray) -> np.ndarray:
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"audio: expected [C, S] with C in (1, 2), got shape {audio.shape}")
    if audio.size and float(np.abs(audio).max()) > 1.0:
        raise ValueError(f"audio: expected values in [-1, 1], got peak {float(np.abs(audio).max()):.4g}")
    return audio
