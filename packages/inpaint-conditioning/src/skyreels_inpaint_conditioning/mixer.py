"""Training task mixtures per stage (paper section 4.1, Table 1) and a seeded task sampler.

Weights are data: a :class:`TaskMixture` maps task names to probabilities that sum to 1. Presets
from the paper (Table 1 and section 4.1):

- Stages 3-5 (video pretrain with inpainting): image inpainting, I2V, V2V and video editing at 5%
  each. The paper does not split the remaining 80% between T2I and T2V; both are "text only"
  (M = 0; T2I is a one-frame clip), so it is one ``text_to_video`` entry here and the image/video
  split is the data loader's. "V2V" is read as video extension (video-conditioned generation; editing
  is listed separately). Stages 4 and 5 keep "the inpainting ratio unchanged".
- Stage 6 (multi-modal condition pretrain): image reference 20%, video reference 20%, T2V 60%.

Interpolation appears in no preset (the paper lists it in 3.2 but not in Table 1); custom mixtures
may use it. :meth:`TaskSampler.draw_spec` turns a sampled name into a concrete
:class:`~skyreels_inpaint_conditioning.tasks.TaskSpec` with random parameters.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from skyreels_inpaint_conditioning.edit_masks import EditMaskKind, random_edit_mask
from skyreels_inpaint_conditioning.errors import TaskMixtureError, TaskParameterError
from skyreels_inpaint_conditioning.latent_mask import latent_num_frames
from skyreels_inpaint_conditioning.tasks import (
    ImageInpainting,
    ImageToVideo,
    StartEndInterpolation,
    TaskSpec,
    TextToVideo,
    VideoEditing,
    VideoExtension,
)

__all__ = ["PAPER_STAGE_MIXTURES", "TaskMixture", "TaskSampler", "TrainingTask"]


class TrainingTask(str, enum.Enum):
    """Names a mixture can weight: the conditioning tasks plus the in-context reference tasks (3.3)."""

    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"
    VIDEO_EXTENSION = "video_extension"
    INTERPOLATION = "interpolation"
    VIDEO_EDITING = "video_editing"
    IMAGE_INPAINTING = "image_inpainting"
    IMAGE_REFERENCE = "image_reference"
    VIDEO_REFERENCE = "video_reference"


def _as_task(name: object) -> TrainingTask:
    try:
        return TrainingTask(name)
    except ValueError:
        valid = ", ".join(t.value for t in TrainingTask)
        raise TaskMixtureError(f"weights: unknown task name {name!r}; expected one of {valid}") from None


@dataclass(frozen=True, kw_only=True)
class TaskMixture:
    """Probabilities of the training tasks of one stage.

    Args:
        name: a label (e.g. ``"video_pretrain_stage3"``).
        weights: task name (``TrainingTask`` or its string value) -> probability; each finite and
            ``>= 0``, summing to 1 within ``1e-6``.
    """

    name: str
    weights: Mapping[TrainingTask, float] = field(hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or len(self.weights) == 0:
            raise TaskMixtureError(
                f"weights: expected a non-empty mapping task -> probability, got {self.weights!r}"
            )
        checked: dict[TrainingTask, float] = {}
        for key, value in self.weights.items():
            task = _as_task(key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise TaskMixtureError(
                    f"weights[{task.value!r}]: expected a finite probability >= 0, got {value!r}"
                )
            checked[task] = float(value)
        total = sum(checked.values())
        if abs(total - 1.0) > 1e-6:
            raise TaskMixtureError(
                f"weights: expected probabilities summing to 1, got sum {total:.6g} in {self.name!r}"
            )
        object.__setattr__(self, "weights", MappingProxyType(checked))

    @property
    def tasks(self) -> tuple[TrainingTask, ...]:
        """The tasks in the order sampling indexes them."""
        return tuple(self.weights)

    def probabilities(self) -> Tensor:
        """float64 ``[num_tasks]`` in :attr:`tasks` order."""
        return torch.tensor([self.weights[t] for t in self.tasks], dtype=torch.float64)

    def sample(self, num_samples: int, *, generator: torch.Generator) -> list[TrainingTask]:
        """Draw ``num_samples`` tasks i.i.d. (with replacement) using ``generator``."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        index = torch.multinomial(self.probabilities(), num_samples, replacement=True, generator=generator)
        tasks = self.tasks
        return [tasks[i] for i in index.tolist()]


_INPAINT_STAGE = {
    TrainingTask.TEXT_TO_VIDEO: 0.80,
    TrainingTask.IMAGE_INPAINTING: 0.05,
    TrainingTask.IMAGE_TO_VIDEO: 0.05,
    TrainingTask.VIDEO_EXTENSION: 0.05,
    TrainingTask.VIDEO_EDITING: 0.05,
}

PAPER_STAGE_MIXTURES: Mapping[str, TaskMixture] = MappingProxyType(
    {
        "video_pretrain_stage3": TaskMixture(name="video_pretrain_stage3", weights=_INPAINT_STAGE),
        "video_pretrain_stage4": TaskMixture(name="video_pretrain_stage4", weights=_INPAINT_STAGE),
        "video_pretrain_stage5": TaskMixture(name="video_pretrain_stage5", weights=_INPAINT_STAGE),
        "video_pretrain_stage6": TaskMixture(
            name="video_pretrain_stage6",
            weights={
                TrainingTask.TEXT_TO_VIDEO: 0.60,
                TrainingTask.IMAGE_REFERENCE: 0.20,
                TrainingTask.VIDEO_REFERENCE: 0.20,
            },
        ),
    }
)
"""The paper's stage mixtures (Table 1, section 4.1), keyed by stage name."""


class TaskSampler:
    """Seeded sampler: which task each training sample gets, and its random parameters.

    Args:
        mixture: the stage's mixture.
        seed: seed of the sampler's own ``torch.Generator`` (CPU); the same seed gives the same draws.
    """

    def __init__(self, mixture: TaskMixture, *, seed: int) -> None:
        if not isinstance(mixture, TaskMixture):
            raise TypeError(f"mixture: expected a TaskMixture, got {type(mixture).__name__}")
        self.mixture = mixture
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, num_samples: int = 1) -> list[TrainingTask]:
        """Next ``num_samples`` task names."""
        return self.mixture.sample(num_samples, generator=self.generator)

    def draw_spec(
        self, task: TrainingTask, *, num_frames: int, height: int, width: int, temporal_factor: int = 4
    ) -> TaskSpec:
        """A concrete spec for ``task`` on an ``F x H x W`` clip, with random parameters.

        - extension: ``k = 1 + temporal_factor * j``, ``j`` uniform in ``0 .. T-2``, so the kept prefix
          is exactly ``j + 1`` latent frames;
        - editing: :func:`random_edit_mask` of a uniformly chosen kind;
        - image inpainting (``F = 1``): a box, brush or outpainting mask;
        - image/video reference tasks: text-to-video conditioning (M = 0); the references themselves
          come from the data and are packed with ``pack_video_references``.
        """
        task = _as_task(task)
        g = self.generator
        if task in (TrainingTask.TEXT_TO_VIDEO, TrainingTask.IMAGE_REFERENCE, TrainingTask.VIDEO_REFERENCE):
            return TextToVideo()
        if task is TrainingTask.IMAGE_TO_VIDEO:
            return ImageToVideo()
        if task is TrainingTask.VIDEO_EXTENSION:
            t = latent_num_frames(num_frames, temporal_factor=temporal_factor)
            if t < 2:
                raise TaskParameterError(
                    f"num_frames: video extension needs at least two latent frames, got F={num_frames}"
                )
            j = int(torch.randint(0, t - 1, (1,), generator=g).item())
            return VideoExtension(num_kept_frames=1 + temporal_factor * j)
        if task is TrainingTask.INTERPOLATION:
            return StartEndInterpolation()
        if task is TrainingTask.VIDEO_EDITING:
            mask = random_edit_mask(num_frames=num_frames, height=height, width=width, generator=g)
            return VideoEditing(keep_mask=mask)
        # IMAGE_INPAINTING
        if num_frames != 1:
            raise TaskParameterError(
                f"num_frames: image inpainting draws one-frame clips, got F={num_frames}"
            )
        kinds = (EditMaskKind.BOX, EditMaskKind.BRUSH, EditMaskKind.OUTPAINT)
        kind = kinds[int(torch.randint(0, len(kinds), (1,), generator=g).item())]
        mask = random_edit_mask(num_frames=1, height=height, width=width, generator=g, kind=kind)
        return ImageInpainting(keep_mask=mask[0])

    def state_dict(self) -> dict[str, Tensor]:
        """The generator state, to resume a run with identical draws."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
