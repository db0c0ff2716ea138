"""Training tasks of the joint model (paper 4.1, Table 1): what is generated, what is given, per batch.

A task mixture is data: ``{"t2av": 0.5, "v2a": 0.2, "a2v": 0.1, "image_to_video": 0.1, ...}``. Names are
the joint tasks below plus skyreels-inpaint-conditioning's ``TrainingTask`` values (the inpainting
family and in-context references), which generate both modalities with a video condition.

| name            | video                         | audio        |
|-----------------|-------------------------------|--------------|
| t2av            | generated                     | generated    |
| t2v             | generated                     | absent (σ=1 noise, no loss) |
| t2a / t2i-free  | absent (σ=1 noise, no loss)   | generated    |
| v2a             | given clean (σ=0, M=1)        | generated    |
| a2v             | generated                     | given clean (σ=0) |
| image_to_video, video_extension, interpolation, video_editing, image_inpainting |
|                 | inpainting (M from the task)  | generated    |
| image_reference, video_reference | generated with an in-context reference (eq. 8) | generated |
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from types import MappingProxyType

import torch

from skyreels_inpaint_conditioning import TrainingTask
from skyreels_v4.errors import SkyReelsError

__all__ = ["JointTask", "TaskName", "parse_task_mixture", "sample_task"]


class JointTask(str, enum.Enum):
    T2AV = "t2av"
    T2V = "t2v"
    T2A = "t2a"
    V2A = "v2a"
    A2V = "a2v"


TaskName = JointTask | TrainingTask


def _task(name: object) -> TaskName:
    for kind in (JointTask, TrainingTask):
        try:
            return kind(name)
        except ValueError:
            pass
    valid = [t.value for t in JointTask] + [t.value for t in TrainingTask]
    raise SkyReelsError(f"tasks: unknown task {name!r}; expected one of {valid}")


def parse_task_mixture(weights: Mapping[str, float]) -> Mapping[TaskName, float]:
    """Validate a mixture: known names, finite non-negative weights, normalised to sum 1."""
    if not isinstance(weights, Mapping) or not weights:
        raise SkyReelsError(f"tasks: expected a non-empty mapping name -> weight, got {weights!r}")
    parsed: dict[TaskName, float] = {}
    for key, value in weights.items():
        task = _task(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise SkyReelsError(f"tasks[{key!r}]: expected a finite weight >= 0, got {value!r}")
        parsed[task] = float(value)
    total = sum(parsed.values())
    if total <= 0:
        raise SkyReelsError("tasks: expected at least one positive weight")
    return MappingProxyType({k: v / total for k, v in parsed.items()})


def sample_task(mixture: Mapping[TaskName, float], generator: torch.Generator) -> TaskName:
    """One task drawn from ``mixture`` with ``generator``."""
    names = list(mixture)
    probabilities = torch.tensor([mixture[n] for n in names], dtype=torch.float64)
    return names[int(torch.multinomial(probabilities, 1, generator=generator))]
