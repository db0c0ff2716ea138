"""How the pipeline samples: solver, steps, σ shift and per-modality guidance, as one frozen config
that lives in the model folder (``scheduler/scheduler_config.json``) and can be overridden per call."""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from skyreels_flow_matching import (
    GuidanceBatching,
    JointGuidanceConfig,
    ModalityGuidanceConfig,
    ScheduleForm,
    Solver,
)
from skyreels_v4.io import atomic_write_json, read_json
from skyreels_v4.model.config_io import from_plain, to_plain

__all__ = ["NegativeReferences", "SamplingConfig"]

SCHEDULER_CONFIG_NAME = "scheduler_config.json"


class NegativeReferences(str, enum.Enum):
    """Whether the in-context references (paper 3.3) stay in guidance's negative branch.

    ``keep``: the negative differs from the positive by its text only, so guidance amplifies the prompt
    and the references act fully in both branches (identity kept at any scale). ``drop``: the negative
    sees neither text nor references, so guidance also amplifies the references (stronger likeness;
    the branches then run one after another because their token counts differ).
    """

    KEEP = "keep"
    DROP = "drop"


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Attributes:
    solver: any solver of skyreels-flow-matching (euler, heun, dpmpp_2m, unipc).
    num_steps: denoising steps (grid of ``num_steps + 1`` σ values ending at 0).
    shift: σ shift ``s`` (``σ' = sσ / (1 + (s-1)σ)``); 1 = none.
    schedule: ``diffusers`` (bit-exact with FlowMatchEulerDiscreteScheduler) or ``shift_once``.
    video_guidance, audio_guidance: classifier-free guidance scales (1 = off, no negative forward).
    video_rescale, audio_rescale: guidance rescale φ in [0, 1].
    video_guidance_interval, audio_guidance_interval: ``(lo, hi)``: guide that modality only at steps
        whose σ lies in ``[lo, hi]`` (Kynkäänniemi et al. 2024); elsewhere its conditional velocity is
        used and, when neither modality guides, the negative forward is skipped. ``(0, 1)`` = every step.
    embedded_guidance: the distilled guidance value for a video branch with a guidance embedding
        (HunyuanVideo feeds ``1000 · scale``); None for models without one.
    batching: run guidance branches as one batch (fast) or one after another (memory).
    negative_references: whether references stay in the negative branch (``NegativeReferences``).
    The negative's text is the request's ``negative_prompt`` (default "": the empty prompt, which is what
    training's text dropout shows the model, so the default negative is a text drop).
    """

    solver: Solver = Solver.EULER
    num_steps: int = 30
    shift: float = 5.0
    schedule: ScheduleForm = ScheduleForm.DIFFUSERS
    video_guidance: float = 5.0
    audio_guidance: float = 4.0
    video_rescale: float = 0.0
    audio_rescale: float = 0.0
    video_guidance_interval: tuple[float, float] = (0.0, 1.0)
    audio_guidance_interval: tuple[float, float] = (0.0, 1.0)
    embedded_guidance: float | None = None
    batching: GuidanceBatching = field(default=GuidanceBatching.BATCHED)
    negative_references: NegativeReferences = NegativeReferences.KEEP

    def __post_init__(self) -> None:
        if not isinstance(self.solver, Solver):
            raise TypeError(f"solver: expected one of {[s.value for s in Solver]}, got {self.solver!r}")
        if not isinstance(self.schedule, ScheduleForm):
            raise TypeError(f"schedule: expected a ScheduleForm, got {self.schedule!r}")
        if not isinstance(self.batching, GuidanceBatching):
            raise TypeError(f"batching: expected a GuidanceBatching, got {self.batching!r}")
        if not isinstance(self.negative_references, NegativeReferences):
            raise TypeError(
                f"negative_references: expected one of {[n.value for n in NegativeReferences]}, "
                f"got {self.negative_references!r}"
            )
        if (
            isinstance(self.num_steps, bool)
            or not isinstance(self.num_steps, int)
            or not 1 <= self.num_steps <= 1000
        ):
            raise ValueError(f"num_steps: expected an int in [1, 1000], got {self.num_steps!r}")
        for name in ("shift", "video_guidance", "audio_guidance", "video_rescale", "audio_rescale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if self.shift <= 0:
            raise ValueError(f"shift: expected > 0, got {self.shift!r}")
        for name in ("video_guidance", "audio_guidance"):
            if not 0 <= getattr(self, name) <= 50:
                raise ValueError(f"{name}: expected a scale in [0, 50], got {getattr(self, name)!r}")
        for name in ("video_rescale", "audio_rescale"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: expected a value in [0, 1], got {getattr(self, name)!r}")
        for name in ("video_guidance_interval", "audio_guidance_interval"):
            interval = getattr(self, name)
            if (
                not isinstance(interval, tuple)
                or len(interval) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in interval)
                or not 0.0 <= interval[0] <= interval[1] <= 1.0
            ):
                raise ValueError(f"{name}: expected (lo, hi) with 0 <= lo <= hi <= 1, got {interval!r}")
        if self.embedded_guidance is not None and (
            isinstance(self.embedded_guidance, bool)
            or not isinstance(self.embedded_guidance, (int, float))
            or not math.isfinite(self.embedded_guidance)
            or self.embedded_guidance < 0
        ):
            raise ValueError(
                f"embedded_guidance: expected None or a finite number >= 0, got {self.embedded_guidance!r}"
            )

    @property
    def guidance(self) -> JointGuidanceConfig:
        return JointGuidanceConfig(
            video=ModalityGuidanceConfig(
                scale=float(self.video_guidance),
                rescale=float(self.video_rescale),
                sigma_interval=tuple(float(v) for v in self.video_guidance_interval),
            ),
            audio=ModalityGuidanceConfig(
                scale=float(self.audio_guidance),
                rescale=float(self.audio_rescale),
                sigma_interval=tuple(float(v) for v in self.audio_guidance_interval),
            ),
            batching=self.batching,
        )

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder) / SCHEDULER_CONFIG_NAME
        atomic_write_json(path, {"_class_name": "SamplingConfig", **to_plain(self)})
        return path

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> SamplingConfig:
        data = read_json(Path(folder) / SCHEDULER_CONFIG_NAME, what="sampling config")
        if not isinstance(data, dict):
            raise ValueError(f"{Path(folder) / SCHEDULER_CONFIG_NAME}: expected a JSON object")
        data = {k: v for k, v in data.items() if k != "_class_name"}
        return from_plain(cls, data, name=str(Path(folder) / SCHEDULER_CONFIG_NAME))
