"""What a generation returns: frames, waveform, their rates and latents; saved as .mp4 / .wav atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from skyreels_v4.errors import SkyReelsError
from skyreels_v4.world.media import write_mp4, write_wav

__all__ = ["GenerationOutput", "frames_to_uint8"]


def frames_to_uint8(video: Tensor) -> np.ndarray:
    """``[3, F, H, W]`` in [-1, 1] -> ``[F, H, W, 3]`` uint8 (rounded, clamped)."""
    pixels = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).contiguous().cpu().numpy()


@dataclass(frozen=True, kw_only=True, eq=False)
class GenerationOutput:
    """Attributes:
    video: ``[3, F, H, W]`` in [-1, 1], or None (t2a).
    audio: ``[channels, samples]`` in [-1, 1], or None (t2v / i2v).
    fps, sample_rate: rates of ``video`` and ``audio``.
    video_latents, audio_latents: the sampled latents ``[1, C, T, h, w]`` / ``[1, Ca, La]``.
    task: the task that made it.
    base_video_latents: with ``refine_to`` (paper 4.5), the base model's low-resolution latents that the
        refiner read (``video_latents`` are then the refined ones); None otherwise.
    keyframe_latents: with ``keyframes``, the base model's high-res keyframes ``[1, C, N, h', w']``
        that replaced the interpolated frames in the refiner's input; None otherwise.
    """

    video: Tensor | None
    audio: Tensor | None
    fps: float
    sample_rate: int
    video_latents: Tensor
    audio_latents: Tensor
    task: str
    base_video_latents: Tensor | None = None
    keyframe_latents: Tensor | None = None

    @property
    def duration_s(self) -> float:
        if self.video is not None:
            return self.video.shape[1] / self.fps
        return self.audio.shape[1] / self.sample_rate

    def frames(self) -> np.ndarray:
        """Frames as ``[F, H, W, 3]`` uint8."""
        if self.video is None:
            raise SkyReelsError(f"video: task {self.task!r} generates no video")
        return frames_to_uint8(self.video)

    def waveform(self) -> np.ndarray:
        """Audio as float32 ``[channels, samples]`` clipped to [-1, 1]."""
        if self.audio is None:
            raise SkyReelsError(f"audio: task {self.task!r} generates no audio")
        return self.audio.detach().float().clamp(-1, 1).cpu().numpy()

    def save(self, path: str | os.PathLike[str], *, wav: bool = False) -> Path:
        """Write ``path``: .mp4 (H.264 + AAC when there is audio) or .wav (audio only).

        ``wav=True`` also writes the audio next to an .mp4 (same name, .wav). Files appear atomically.
        """
        target = Path(path)
        suffix = target.suffix.lower()
        if suffix == ".wav":
            write_wav(target, self.waveform(), self.sample_rate)
            return target
        if suffix != ".mp4":
            raise SkyReelsError(f"path: expected a .mp4 or .wav file name, got {str(target)!r}")
        frames = self.frames()
        if frames.shape[1] % 2 or frames.shape[2] % 2:
            raise SkyReelsError(
                f"path: H.264 needs even frame sizes, got {frames.shape[1]}x{frames.shape[2]}"
            )
        audio = None if self.audio is None else self.waveform()
        write_mp4(target, frames, self.fps, audio, self.sample_rate if audio is not None else None)
        if wav and audio is not None:
            write_wav(target.with_suffix(".wav"), audio, self.sample_rate)
        return target
