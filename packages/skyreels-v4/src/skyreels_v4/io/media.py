"""Read media files into the toolkit's tensors, with typed errors naming the file.

Video ``[3, F, H, W]`` float32 in [-1, 1] (PyAV decodes any container/codec FFmpeg knows), audio
``[channels, samples]`` float32 in [-1, 1] (soundfile for wav/flac/ogg, PyAV for the audio stream of a
video container), images ``[3, H, W]`` in [-1, 1]. NaN cannot come out of a decoder, but an empty
stream can: it is an error, never a silent empty clip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from skyreels_v4.errors import FileFormatError

__all__ = ["read_audio_file", "read_image_file", "read_video_file"]


def _existing(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if not target.is_file():
        raise FileFormatError(target, "expected a media file, but it is missing")
    return target


def read_video_file(
    path: str | os.PathLike[str], *, start_s: float = 0.0, end_s: float | None = None
) -> tuple[Tensor, float]:
    """Frames in ``[start_s, end_s)`` of the first video stream and its frame rate."""
    import av

    target = _existing(path)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(target)) as container:
            if not container.streams.video:
                raise FileFormatError(target, "has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise FileFormatError(target, "has no frame rate")
            fps = float(rate)
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(frames) / fps
                if t + 1e-6 < start_s:
                    continue
                if end_s is not None and t >= end_s - 1e-6:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as error:
        raise FileFormatError(target, f"cannot decode the video ({error})") from error
    if not frames:
        raise FileFormatError(target, f"no video frames in [{start_s}, {end_s}) s")
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return video, fps


def read_audio_file(
    path: str | os.PathLike[str], *, start_s: float = 0.0, end_s: float | None = None
) -> tuple[Tensor, int]:
    """Samples in ``[start_s, end_s)`` and the sample rate (wav/flac/ogg via soundfile, else PyAV)."""
    target = _existing(path)
    if target.suffix.lower() in (".wav", ".flac", ".ogg"):
        import soundfile

        try:
            data, rate = soundfile.read(str(target), dtype="float32", always_2d=True)
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise FileFormatError(target, f"cannot read the audio ({error})") from error
        audio = torch.from_numpy(data.T.copy())
    else:
        import av

        chunks: list[np.ndarray] = []
        try:
            with av.open(str(target)) as container:
                if not container.streams.audio:
                    raise FileFormatError(target, "has no audio stream")
                stream = container.streams.audio[0]
                rate = int(stream.rate)
                for frame in container.decode(stream):
                    array = frame.to_ndarray()
                    if array.ndim == 1:
                        array = array[None]
                    if not frame.format.is_planar:  # interleaved [1, S * C]
                        array = array.reshape(-1, frame.layout.nb_channels).T
                    if array.dtype.kind in "iu":
                        array = array.astype(np.float32) / np.iinfo(array.dtype).max
                    chunks.append(array.astype(np.float32))
        except av.error.FFmpegError as error:
            raise FileFormatError(target, f"cannot decode the audio ({error})") from error
        if not chunks:
            raise FileFormatError(target, "the audio stream is empty")
        audio = torch.from_numpy(np.concatenate(chunks, axis=1))
    start = round(start_s * rate)
    end = audio.shape[1] if end_s is None else round(end_s * rate)
    audio = audio[:, start:end].clamp(-1, 1)
    if audio.shape[1] == 0:
        raise FileFormatError(target, f"no audio samples in [{start_s}, {end_s}) s")
    return audio.contiguous(), int(rate)


def read_image_file(path: str | os.PathLike[str]) -> Tensor:
    """An image (png / jpg / anything FFmpeg decodes) as ``[3, H, W]`` in [-1, 1]."""
    video, _ = read_video_file(path)
    return video[:, 0]
