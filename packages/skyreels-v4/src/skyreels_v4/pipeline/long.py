"""Long clips by chained extension (paper 3.2's video extension task, applied window after window).

The first window is the request itself (any task that generates video: t2av, i2v, ...) at
``window_frames``. Each next window is an ``extend`` request whose kept prefix is the last
``overlap_frames`` of the clip so far *and* the audio under them, so the model continues both the
picture and the sound. Stitching keeps everything already made: the new window contributes only the
frames after the overlap, and its audio from the end of the kept audio latents on (the samples it
reproduces exactly), so the waveform changes hands where the new window's own audio continues its
own kept context and no step appears at the seam. An inexact audio codec (the spectrogram codec's
Griffin-Lim phase, an audio VAE) reproduces the kept audio only approximately, so the last
``audio_crossfade`` seconds before each seam fade from the clip's audio to the window's own decode
of the same stretch (a raised-cosine ramp, ``join_audio``); with an exact codec the two agree and the
fade changes nothing.

With ``refine_to`` (paper 4.5's efficient path) every window is a refined generation: the base pass at
the request's size, then the refiner to ``refine_to``. The next window extends the *refined* frames:
its base pass sees the overlap resized to the base size, and the refiner keeps the high-resolution
overlap exactly (M = 1), so the seam is continuous at the output resolution. This needs a refiner with
``frame_factor`` 1 (an extension's prefix cannot be given at a multiple of the base frame rate).

Shape legend: F frames, S samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from skyreels_v4.errors import SkyReelsError
from skyreels_v4.pipeline.output import GenerationOutput
from skyreels_v4.pipeline.request import GenerationRequest, Task

if TYPE_CHECKING:
    from skyreels_v4.pipeline.pipeline import SkyReelsV4Pipeline

__all__ = ["DEFAULT_AUDIO_CROSSFADE", "LongClip", "generate_long", "join_audio"]

#: Seconds faded before each audio seam: one 512-sample STFT window at 16 kHz.
DEFAULT_AUDIO_CROSSFADE = 0.032


@dataclass(frozen=True, kw_only=True, eq=False)
class LongClip:
    """The stitched clip and what each window made.

    Attributes:
        output: the whole clip (``video [3, F, H, W]``, ``audio [ch, S]``; latents of the last window).
        windows: every window's own output, in order.
        frame_starts: the clip frame where each window starts.
        audio_seams: the clip sample where each later window's audio takes over.
    """

    output: GenerationOutput
    windows: tuple[GenerationOutput, ...]
    frame_starts: tuple[int, ...]
    audio_seams: tuple[int, ...]


def _check_int(name: str, value: object, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise SkyReelsError(f"{name}: expected an int >= {lowest}, got {value!r}")
    return value


def generate_long(
    pipe: SkyReelsV4Pipeline,
    request: GenerationRequest,
    *,
    total_frames: int,
    window_frames: int,
    overlap_frames: int,
    audio_crossfade: float = DEFAULT_AUDIO_CROSSFADE,
    **call: Any,
) -> LongClip:
    """Generate ``total_frames`` frames in windows of ``window_frames`` overlapping by ``overlap_frames``.

    Both window and overlap must be whole-latent lengths (``1 + k·temporal_factor``) so that the kept
    context is exactly a run of latent frames. ``call`` goes to every window's ``pipe(...)`` (sampling,
    callback, progress). Window ``k`` uses seed ``request.seed + k``. ``audio_crossfade``: seconds
    before each audio seam faded from the clip's audio to the window's (0: a hard cut; capped at the
    kept audio).

    Raises:
        SkyReelsError: a task that makes no video, or lengths that do not fit (named).
    """
    if not isinstance(request, GenerationRequest):
        raise TypeError(f"request: expected a GenerationRequest, got {type(request).__name__}")
    if request.task in (Task.T2A, Task.V2A, Task.A2V, Task.EDIT):
        raise SkyReelsError(
            f"task: long generation extends generated video; {request.task.value!r} is not extendable "
            "(use t2av, t2v, i2v, i2av, interpolate or extend)"
        )
    tf = pipe.video_vae.temporal_factor
    total_frames = _check_int("total_frames", total_frames, 2)
    window_frames = _check_int("window_frames", window_frames, 1 + tf)
    overlap_frames = _check_int("overlap_frames", overlap_frames, 1)
    if (
        isinstance(audio_crossfade, bool)
        or not isinstance(audio_crossfade, (int, float))
        or not 0 <= audio_crossfade < float("inf")
    ):
        raise SkyReelsError(f"audio_crossfade: expected seconds >= 0, got {audio_crossfade!r}")
    for name, value in (("window_frames", window_frames), ("overlap_frames", overlap_frames)):
        if (value - 1) % tf:
            raise SkyReelsError(f"{name}: expected 1 + {tf}k frames (whole latent frames), got {value}")
    if overlap_frames >= window_frames:
        raise SkyReelsError(
            f"overlap_frames: expected fewer than window_frames ({window_frames}), got {overlap_frames}"
        )
    if request.num_frames is not None and request.num_frames != window_frames:
        raise SkyReelsError(
            f"num_frames: the request's {request.num_frames} frames conflict with window_frames "
            f"{window_frames} (leave num_frames unset for long generation)"
        )
    if request.refine_to is not None:
        refiner = pipe.require("refiner", "refine_to")
        if refiner.config.frame_factor != 1:
            raise SkyReelsError(
                f"refine_to: long generation extends the refined frames, which needs a refiner with "
                f"frame_factor 1; this refiner has frame_factor {refiner.config.frame_factor}"
            )
    if total_frames <= window_frames:
        warnings.warn(
            f"total_frames: {total_frames} fit in one window of {window_frames}; generating one window",
            stacklevel=2,
        )

    first = pipe(request.replace(num_frames=window_frames), **call)
    if first.video is None:  # pragma: no cover - guarded by the task check above
        raise SkyReelsError(f"task: {request.task.value!r} made no video to extend")
    video, audio = first.video, first.audio
    windows, starts, seams = [first], [0], []
    rate, fps = first.sample_rate, first.fps
    while video.shape[1] < total_frames:
        start = video.shape[1] - overlap_frames
        # The audio under the kept frames, from the frame-exact sample position.
        audio_from = round(start / fps * rate)
        context = None if audio is None else audio[:, audio_from:]
        frames = min(window_frames, total_frames - start)
        frames = 1 + -(-(frames - 1) // tf) * tf  # round up to whole latents; cropped below
        extend = request.replace(
            task=Task.EXTEND,
            image=None,
            last_image=None,
            video=video[:, start:],
            audio=context,
            audio_sample_rate=None if context is None else rate,
            num_frames=frames,
            seed=request.seed + len(windows),
        )
        window = pipe(extend, **call)
        windows.append(window)
        starts.append(start)
        video = torch.cat([video, window.video[:, overlap_frames:]], dim=1)
        if audio is not None and window.audio is not None:
            kept_samples = _kept_audio_samples(pipe, context, rate)
            seam = audio_from + kept_samples
            seams.append(seam)
            fade = min(round(audio_crossfade * rate), kept_samples)
            audio = join_audio(audio[:, :seam], window.audio[:, kept_samples - fade :], fade=fade)
    video = video[:, :total_frames]
    if audio is not None:
        audio = _fit(audio, round(total_frames / fps * rate))
    output = GenerationOutput(
        video=video,
        audio=audio,
        fps=fps,
        sample_rate=rate,
        video_latents=windows[-1].video_latents,
        audio_latents=windows[-1].audio_latents,
        task=request.task.value,
    )
    return LongClip(
        output=output, windows=tuple(windows), frame_starts=tuple(starts), audio_seams=tuple(seams)
    )


def join_audio(before: Tensor, after: Tensor, *, fade: int) -> Tensor:
    """``before [ch, S1]`` then ``after [ch, S2]``, whose first ``fade`` samples cover the same stretch as
    the last ``fade`` of ``before``: over that stretch a raised-cosine ramp goes from ``before`` to
    ``after`` (``torch.lerp``, so identical stretches stay bit-identical). Returns ``[ch, S1 + S2 - fade]``.
    """
    if isinstance(fade, bool) or not isinstance(fade, int) or fade < 0:
        raise SkyReelsError(f"fade: expected a sample count >= 0, got {fade!r}")
    if fade > before.shape[1] or fade > after.shape[1]:
        raise SkyReelsError(
            f"fade: {fade} samples is longer than the audio joined ({before.shape[1]} and {after.shape[1]})"
        )
    if fade == 0:
        return torch.cat([before, after], dim=1)
    ramp = 0.5 - 0.5 * torch.cos(
        torch.pi * (torch.arange(fade, dtype=torch.float64) + 0.5) / fade
    )  # 0 -> 1, symmetric
    blended = torch.lerp(before[:, -fade:], after[:, :fade], ramp.to(before.dtype)[None, :])
    return torch.cat([before[:, :-fade], blended, after[:, fade:]], dim=1)


def _kept_audio_samples(pipe: SkyReelsV4Pipeline, context: Tensor, rate: int) -> int:
    """Samples of ``context`` that the extension keeps exactly: its whole audio latents."""
    codec = pipe.audio_vae
    seconds = context.shape[1] / rate
    return codec.num_latents(seconds) * codec.hop_length * rate // codec.sample_rate


def _fit(wave: Tensor, samples: int) -> Tensor:
    if wave.shape[1] >= samples:
        return wave[:, :samples]
    return torch.nn.functional.pad(wave, (0, samples - wave.shape[1]))
