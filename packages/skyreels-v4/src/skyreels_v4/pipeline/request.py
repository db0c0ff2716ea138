"""Tasks as data: one ``GenerationRequest`` describes every task of the paper (3.2, 3.3, appendix).

The task says what is generated and what is given; references (images, clips, audio) combine with
any task. ``validate`` checks that every input the task needs is there and that nothing supplied would
be ignored (a supplied input the task does not use is an error, never silently dropped).

| task          | generated          | given                                              |
|---------------|--------------------|----------------------------------------------------|
| t2av          | video + audio      | text                                               |
| t2v / t2a     | video / audio      | text (the other modality is generated and dropped) |
| i2v / i2av    | video (+ audio)    | first frame ``image``                              |
| interpolate   | video + audio      | first ``image`` and ``last_image``                 |
| extend        | video + audio      | ``video`` prefix (and optionally its ``audio``)    |
| edit          | masked video + audio | ``video`` and ``edit_mask`` (True = keep)         |
| v2a           | audio              | the whole ``video`` (kept untouched)               |
| a2v           | video              | the whole ``audio`` (lip-sync / dance to it)       |
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from skyreels_v4.errors import NonFiniteError, SkyReelsError

__all__ = ["GenerationRequest", "Task"]


class Task(str, enum.Enum):
    T2AV = "t2av"
    T2V = "t2v"
    T2A = "t2a"
    I2V = "i2v"
    I2AV = "i2av"
    INTERPOLATE = "interpolate"
    EXTEND = "extend"
    EDIT = "edit"
    V2A = "v2a"
    A2V = "a2v"

    @property
    def outputs_video(self) -> bool:
        return self is not Task.T2A

    @property
    def outputs_audio(self) -> bool:
        return self not in (Task.T2V, Task.I2V)


# Which of the request's media inputs each task needs (required) and may use (allowed).
_NEEDS: dict[Task, tuple[str, ...]] = {
    Task.T2AV: (),
    Task.T2V: (),
    Task.T2A: (),
    Task.I2V: ("image",),
    Task.I2AV: ("image",),
    Task.INTERPOLATE: ("image", "last_image"),
    Task.EXTEND: ("video",),
    Task.EDIT: ("video", "edit_mask"),
    Task.V2A: ("video",),
    Task.A2V: ("audio",),
}
_ALLOWS: dict[Task, tuple[str, ...]] = {**_NEEDS, Task.EXTEND: ("video", "audio")}
_MEDIA = ("image", "last_image", "video", "audio", "edit_mask")


@dataclass(frozen=True, kw_only=True, eq=False)
class GenerationRequest:
    """One generation. Pixel tensors are in [-1, 1]; waveforms ``[channels, samples]`` in [-1, 1].

    Attributes:
        prompt: the structured caption (``<sfx>``, ``<dialogue>``, ... tags, ``@image_N`` references,
            multi-shot markup; see docs/prompts.md).
        task: what is generated and what is given (module docstring).
        negative_prompt: the negative of classifier-free guidance ("" = the empty prompt).
        num_frames, height, width, fps: output size; None = the pipeline's defaults (for v2a / extend /
            edit the source video decides what it can).
        image, last_image: ``[3, H, W]`` frames (i2v, interpolation).
        video: ``[3, F, H, W]`` (extend: the prefix; edit: the source; v2a: the whole video).
        audio, audio_sample_rate: ``[channels, samples]`` (a2v: the whole track; extend: the prefix's audio).
        edit_mask: bool ``[F, H, W]`` or ``[H, W]`` (every frame), True = keep.
        reference_images: ``[3, H, W]`` images for ``@image_N`` (N = position + 1).
        reference_videos: ``[3, F, H, W]`` clips for ``@video_N``.
        reference_audios: ``[channels, samples]`` waveforms for ``@audio_N`` (at ``audio_sample_rate``).
        seed: the noise seed (CPU generator: bit-reproducible on CPU).
        refine_to: ``(H, W)`` output size of the efficient path of paper 4.5: the base model generates at
            ``height x width``, the pipeline's refiner upsamples (and, with its ``frame_factor``,
            interpolates frames) to ``H x W``; pixel inputs are then given at ``H x W``
            (``skyreels_v4.pipeline.refine``). None = no refinement.
        keyframes: latent frames of the base clip that the base model also generates at the
            ``refine_to`` size, jointly with the low-res clip (paper 4.5's joint prediction; a model
            trained with ``keyframe_probability``); the refiner then reads them in place of the
            interpolated frames. Needs ``refine_to``. () = none.
    """

    prompt: str
    task: Task = Task.T2AV
    negative_prompt: str = ""
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    image: Tensor | None = None
    last_image: Tensor | None = None
    video: Tensor | None = None
    audio: Tensor | None = None
    audio_sample_rate: int | None = None
    edit_mask: Tensor | None = None
    reference_images: tuple[Tensor, ...] = field(default=())
    reference_videos: tuple[Tensor, ...] = field(default=())
    reference_audios: tuple[Tensor, ...] = field(default=())
    seed: int = 0
    refine_to: tuple[int, int] | None = None
    keyframes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        try:
            task = Task(self.task)
        except ValueError:
            raise SkyReelsError(
                f"task: expected one of {[t.value for t in Task]}, got {self.task!r}"
            ) from None
        object.__setattr__(self, "task", task)
        for name in ("reference_images", "reference_videos", "reference_audios"):
            value = getattr(self, name)
            if isinstance(value, Tensor) or not isinstance(value, (tuple, list)):
                raise TypeError(f"{name}: expected a tuple of tensors, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.refine_to, list):
            object.__setattr__(self, "refine_to", tuple(self.refine_to))
        if isinstance(self.keyframes, list):
            object.__setattr__(self, "keyframes", tuple(self.keyframes))
        self.validate()

    def validate(self) -> None:
        """Check types, ranges and that the task's inputs are exactly there (module docstring)."""
        if not isinstance(self.prompt, str):
            raise TypeError(f"prompt: expected a str, got {type(self.prompt).__name__}")
        if not isinstance(self.negative_prompt, str):
            raise TypeError(f"negative_prompt: expected a str, got {type(self.negative_prompt).__name__}")
        for name in ("num_frames", "height", "width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SkyReelsError(f"{name}: expected a positive int or None, got {value!r}")
        if self.fps is not None and (
            isinstance(self.fps, bool)
            or not isinstance(self.fps, (int, float))
            or not math.isfinite(self.fps)
            or not 0 < self.fps <= 240
        ):
            raise SkyReelsError(f"fps: expected a number in (0, 240] or None, got {self.fps!r}")
        if self.refine_to is not None and (
            not isinstance(self.refine_to, tuple)
            or len(self.refine_to) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.refine_to)
        ):
            raise SkyReelsError(
                f"refine_to: expected (height, width), two positive ints, got {self.refine_to!r}"
            )
        if (
            not isinstance(self.keyframes, tuple)
            or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.keyframes)
            or len(set(self.keyframes)) != len(self.keyframes)
        ):
            raise SkyReelsError(
                f"keyframes: expected distinct latent frame indices >= 0, got {self.keyframes!r}"
            )
        if self.keyframes and self.refine_to is None:
            raise SkyReelsError(
                "keyframes: high-res keyframes are generated for the refiner; give refine_to as well"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise SkyReelsError(f"seed: expected an int in [0, 2**63), got {self.seed!r}")
        needs, allows = _NEEDS[self.task], _ALLOWS[self.task]
        for name in _MEDIA:
            value = getattr(self, name)
            if name in needs and value is None:
                raise SkyReelsError(f"{name}: task {self.task.value!r} needs it, got None")
            if name not in allows and value is not None:
                raise SkyReelsError(
                    f"{name}: task {self.task.value!r} does not use it (it would be ignored); "
                    f"remove it or pick a task that uses it"
                )
        _check_pixels("image", self.image, 3)
        _check_pixels("last_image", self.last_image, 3)
        _check_pixels("video", self.video, 4)
        for n, image in enumerate(self.reference_images):
            _check_pixels(f"reference_images[{n}]", image, 3)
        for n, clip in enumerate(self.reference_videos):
            _check_pixels(f"reference_videos[{n}]", clip, 4)
        has_audio = self.audio is not None or bool(self.reference_audios)
        if has_audio:
            if (
                isinstance(self.audio_sample_rate, bool)
                or not isinstance(self.audio_sample_rate, int)
                or not 1000 <= self.audio_sample_rate <= 384_000
            ):
                raise SkyReelsError(
                    f"audio_sample_rate: expected an int in [1000, 384000] with audio inputs, "
                    f"got {self.audio_sample_rate!r}"
                )
        elif self.audio_sample_rate is not None:
            raise SkyReelsError("audio_sample_rate: given, but there is no audio input it would describe")
        _check_waveform("audio", self.audio)
        for n, wave in enumerate(self.reference_audios):
            _check_waveform(f"reference_audios[{n}]", wave)
        if self.edit_mask is not None:
            mask = self.edit_mask
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.ndim not in (2, 3):
                got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
                raise SkyReelsError(f"edit_mask: expected a bool tensor [F, H, W] or [H, W], got {got}")
            if bool(mask.all()):
                raise SkyReelsError("edit_mask: every pixel is kept (True), nothing would be edited")
            if self.video is not None:
                want = tuple(self.video.shape[1:]) if mask.ndim == 3 else tuple(self.video.shape[2:])
                if tuple(mask.shape) != want:
                    raise SkyReelsError(
                        f"edit_mask: expected shape {want} (the video's), got {tuple(mask.shape)}"
                    )

    def replace(self, **changes: object) -> GenerationRequest:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return GenerationRequest(**values)


def _check_pixels(name: str, value: Tensor | None, ndim: int) -> None:
    if value is None:
        return
    shape = "[3, H, W]" if ndim == 3 else "[3, F, H, W]"
    if not isinstance(value, Tensor) or value.ndim != ndim or value.shape[0] != 3:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise SkyReelsError(f"{name}: expected a pixel tensor {shape}, got {got}")
    if not value.is_floating_point():
        raise SkyReelsError(f"{name}: expected floating pixels in [-1, 1], got dtype {value.dtype}")
    if value.numel() == 0:
        raise SkyReelsError(f"{name}: expected pixels, got an empty tensor {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteError(f"{name}: holds NaN or inf pixels")
    lo, hi = float(value.min()), float(value.max())
    if lo < -1.001 or hi > 1.001:
        raise SkyReelsError(f"{name}: expected pixels in [-1, 1], got range [{lo:.3g}, {hi:.3g}]")


def _check_waveform(name: str, value: Tensor | None) -> None:
    if value is None:
        return
    if not isinstance(value, Tensor) or value.ndim != 2 or value.shape[0] not in (1, 2):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise SkyReelsError(f"{name}: expected a waveform [channels (1 or 2), samples], got {got}")
    if not value.is_floating_point():
        raise SkyReelsError(f"{name}: expected a floating waveform in [-1, 1], got dtype {value.dtype}")
    if value.shape[1] == 0:
        raise SkyReelsError(f"{name}: expected audio samples, got an empty waveform")
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteError(f"{name}: holds NaN or inf samples")
    if float(value.abs().max()) > 1.001:
        raise SkyReelsError(f"{name}: expected samples in [-1, 1], got peak {float(value.abs().max()):.3g}")
