"""Task specifications: which pixels of the video are conditions (paper section 3.2, eq. 7).

Shape legend: F pixel frames, H, W pixel height/width.

Every task is "inpainting" with a different keep mask (1 = condition/keep, 0 = generate). A spec
only describes that mask at the PIXEL level; :func:`~skyreels_inpaint_conditioning.latent_mask.
reduce_pixel_mask_to_latent` turns it into the latent mask M, and
:func:`~skyreels_inpaint_conditioning.conditioning.build_inpaint_condition` builds I and M from it.

Paper formulas (latent time t, T latent frames) and the pixel masks that produce them with the Wan
factors (4x time, causal first frame):

===================  =============================  =====================================================
task                 paper (latent grid)             pixel keep mask here
===================  =============================  =====================================================
text-to-video        M = 0                           nothing kept
image-to-video       M[t=0] = 1                      frame 0
video extension      M[t<k'] = 1                     frames 0..k-1; kept latent frames k' = 1 + (k-1)//4
interpolation        M[t=0] = M[t=T-1] = 1           frames 0..s-1 and the last e frames (e >= 4, default 4)
video editing        M[t,h,w] = 1 on preserved       the given [H, W] or [F, H, W] mask
image inpainting     (F = 1) M[0,h,w] = given        the given [H, W] mask
combined             union of the parts              pixel-wise OR of the parts' masks
===================  =============================  =====================================================

Interpolation keeps the last ``e >= temporal_factor`` frames because latent frame T-1 covers the last
four pixel frames; a single end frame could not make it a condition under the conservative rule (the
spec refuses rather than silently degrading to image-to-video). With only an end image, repeat it over
the last four frames (:func:`~skyreels_inpaint_conditioning.conditioning.video_from_keyframes` does).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from skyreels_inpaint_conditioning.errors import ConditioningShapeError, TaskParameterError
from skyreels_inpaint_conditioning.latent_mask import check_binary_mask, latent_num_frames

__all__ = [
    "ClipShape",
    "CombinedTask",
    "ImageInpainting",
    "ImageToVideo",
    "StartEndInterpolation",
    "TaskKind",
    "TaskSpec",
    "TextToVideo",
    "VideoEditing",
    "VideoExtension",
]


class TaskKind(str, enum.Enum):
    """The video-conditioning tasks of paper section 3.2 (plus image inpainting and combinations)."""

    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"
    VIDEO_EXTENSION = "video_extension"
    INTERPOLATION = "interpolation"
    VIDEO_EDITING = "video_editing"
    IMAGE_INPAINTING = "image_inpainting"
    COMBINED = "combined"


class ClipShape(NamedTuple):
    """The clip a task's mask is built for: pixel frames, height, width, the VAE's temporal factor
    and the device of the mask."""

    num_frames: int
    height: int
    width: int
    temporal_factor: int = 4
    device: torch.device | str | None = None

    def no_frame_kept(self) -> Tensor:
        """An all-False ``[F, H, W]`` bool mask on the clip's device."""
        return torch.zeros(self.num_frames, self.height, self.width, dtype=torch.bool, device=self.device)


class TaskSpec(ABC):
    """A conditioning task: knows its kind and its pixel-level keep mask.

    Subclasses implement ``mask_for(clip)``; ``pixel_keep_mask`` is the keyword front door.
    """

    kind: TaskKind

    def pixel_keep_mask(
        self,
        *,
        num_frames: int,
        height: int,
        width: int,
        temporal_factor: int = 4,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Bool ``[F, H, W]``: True where the source video's pixel is a condition.

        Raises ``TaskParameterError`` / ``ConditioningShapeError`` when the task does not fit the clip.
        """
        return self.mask_for(ClipShape(num_frames, height, width, temporal_factor, device))

    @abstractmethod
    def mask_for(self, clip: ClipShape) -> Tensor:
        """``pixel_keep_mask`` for ``clip``: bool ``[F, H, W]``, True = condition."""

    @property
    def label(self) -> str:
        """Readable name, e.g. ``"video_extension"`` or ``"video_extension+video_editing"``."""
        return self.kind.value


def _check_clip(clip: ClipShape) -> None:
    latent_num_frames(clip.num_frames, temporal_factor=clip.temporal_factor)


def _check_count(name: str, value: int, low: int, high: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise TaskParameterError(f"{name}: expected {low} <= {name} <= {high} ({why}), got {value}")


@dataclass(frozen=True, kw_only=True)
class TextToVideo(TaskSpec):
    """T2V (and T2I with F = 1): nothing is a condition, ``M = 0``."""

    kind = TaskKind.TEXT_TO_VIDEO

    def mask_for(self, clip: ClipShape) -> Tensor:
        _check_clip(clip)
        return clip.no_frame_kept()


@dataclass(frozen=True, kw_only=True)
class ImageToVideo(TaskSpec):
    """I2V: pixel frame 0 is the condition, so latent frame 0 is (``M[t=0] = 1``). Needs ``F >= 1 + 4``."""

    kind = TaskKind.IMAGE_TO_VIDEO

    def mask_for(self, clip: ClipShape) -> Tensor:
        _check_clip(clip)
        if clip.num_frames < 1 + clip.temporal_factor:
            raise TaskParameterError(
                f"num_frames: image-to-video needs at least {1 + clip.temporal_factor} frames (one "
                f"generated latent frame), got {clip.num_frames}"
            )
        mask = clip.no_frame_kept()
        mask[0] = True
        return mask


@dataclass(frozen=True, kw_only=True)
class VideoExtension(TaskSpec):
    """Extension: the first ``num_kept_frames`` pixel frames are conditions (paper ``M[t<k] = 1``).

    On the latent grid the kept prefix is ``1 + (k-1) // 4`` latent frames: a latent group is a
    condition only when all four of its frames are kept (k = 1 -> 1, k = 4 -> 1, k = 5 -> 2, k = 9 -> 3).
    Valid range: ``1 <= k <= F - 1``; the last latent frame always has an unkept frame, so at least
    one latent frame is generated.
    """

    num_kept_frames: int
    kind = TaskKind.VIDEO_EXTENSION

    def mask_for(self, clip: ClipShape) -> Tensor:
        _check_clip(clip)
        _check_count(
            "num_kept_frames",
            self.num_kept_frames,
            1,
            clip.num_frames - 1,
            f"at least one frame of the F={clip.num_frames}-frame clip must be generated",
        )
        mask = clip.no_frame_kept()
        mask[: self.num_kept_frames] = True
        return mask


@dataclass(frozen=True, kw_only=True)
class StartEndInterpolation(TaskSpec):
    """Start-end interpolation: the first ``num_start_frames`` and last ``num_end_frames`` frames are kept.

    ``num_end_frames`` (default: the VAE's temporal factor) must be at least the temporal factor so the
    last latent frame becomes a condition (paper ``M[t=0] = M[t=T-1] = 1``).
    """

    num_start_frames: int = 1
    num_end_frames: int | None = None
    kind = TaskKind.INTERPOLATION

    def mask_for(self, clip: ClipShape) -> Tensor:
        _check_clip(clip)
        factor, frames = clip.temporal_factor, clip.num_frames
        end = factor if self.num_end_frames is None else self.num_end_frames
        _check_count(
            "num_end_frames",
            end,
            factor,
            frames - 1,
            f"latent frame T-1 covers the last {factor} pixel frames; fewer would not condition it",
        )
        _check_count(
            "num_start_frames",
            self.num_start_frames,
            1,
            frames - end - 1,
            f"start and {end} end frames must leave a frame of the F={frames}-frame clip to generate",
        )
        mask = clip.no_frame_kept()
        mask[: self.num_start_frames] = True
        mask[frames - end :] = True
        return mask


def _as_keep_mask(name: str, keep_mask: object, ranks: tuple[int, ...]) -> Tensor:
    if not isinstance(keep_mask, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(keep_mask).__name__}")
    if keep_mask.ndim not in ranks:
        shapes = " or ".join({2: "[H, W]", 3: "[F, H, W]"}[r] for r in ranks)
        raise ConditioningShapeError(f"{name}: expected shape {shapes}, got {tuple(keep_mask.shape)}")
    return check_binary_mask(name, keep_mask)


@dataclass(frozen=True, kw_only=True, eq=False)
class VideoEditing(TaskSpec):
    """Editing with an arbitrary spatio-temporal keep mask: 1 = preserved pixel, 0 = edited pixel.

    Args:
        keep_mask: ``[H, W]`` (the same region in every frame) or ``[F, H, W]`` (per frame), binary.
    """

    keep_mask: Tensor
    kind = TaskKind.VIDEO_EDITING

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_mask", _as_keep_mask("keep_mask", self.keep_mask, (2, 3)))

    def mask_for(self, clip: ClipShape) -> Tensor:
        _check_clip(clip)
        frames, height, width = clip.num_frames, clip.height, clip.width
        expected = (height, width) if self.keep_mask.ndim == 2 else (frames, height, width)
        if tuple(self.keep_mask.shape) != expected:
            raise ConditioningShapeError(
                f"keep_mask: expected shape {list(expected)} to match the video, "
                f"got {list(self.keep_mask.shape)}"
            )
        mask = self.keep_mask.to(device=clip.device)
        return mask.expand(frames, height, width).clone() if mask.ndim == 2 else mask.clone()


@dataclass(frozen=True, kw_only=True, eq=False)
class ImageInpainting(TaskSpec):
    """Image inpainting: a one-frame clip (F = 1) with a keep mask ``[H, W]`` (1 = keep)."""

    keep_mask: Tensor
    kind = TaskKind.IMAGE_INPAINTING

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_mask", _as_keep_mask("keep_mask", self.keep_mask, (2,)))

    def mask_for(self, clip: ClipShape) -> Tensor:
        if clip.num_frames != 1:
            raise ConditioningShapeError(
                f"num_frames: image inpainting needs a one-frame clip (F = 1), got {clip.num_frames}"
            )
        if tuple(self.keep_mask.shape) != (clip.height, clip.width):
            raise ConditioningShapeError(
                f"keep_mask: expected shape {[clip.height, clip.width]} to match the image, "
                f"got {list(self.keep_mask.shape)}"
            )
        return self.keep_mask.to(device=clip.device)[None].clone()


@dataclass(frozen=True, kw_only=True)
class CombinedTask(TaskSpec):
    """Several tasks on one source video; the conditions are the UNION of the parts' keep masks.

    A pixel is a condition if any part keeps it, e.g. extension + editing = "keep the first k frames
    whole and the unedited region of the later frames"; interpolation + editing = "keep the start and
    end frames whole and the unedited region in between". The union is taken on pixels, before the
    latent reduction, so two parts that together cover a latent cell make it a condition. (To edit a
    prefix and then extend it, use one editing mask that is 0 on the frames to generate.)
    """

    parts: tuple[TaskSpec, ...]
    kind = TaskKind.COMBINED

    def __post_init__(self) -> None:
        if not isinstance(self.parts, tuple) or len(self.parts) < 2:
            raise TaskParameterError(f"parts: expected a tuple of at least two TaskSpec, got {self.parts!r}")
        for i, part in enumerate(self.parts):
            if not isinstance(part, TaskSpec):
                raise TypeError(f"parts[{i}]: expected a TaskSpec, got {type(part).__name__}")

    @property
    def label(self) -> str:
        return "+".join(part.label for part in self.parts)

    def mask_for(self, clip: ClipShape) -> Tensor:
        masks = [part.mask_for(clip) for part in self.parts]
        union = masks[0]
        for mask in masks[1:]:
            union = union | mask
        return union
