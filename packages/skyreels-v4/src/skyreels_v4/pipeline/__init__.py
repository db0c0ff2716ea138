"""Generation: one pipeline for every task of the paper (text/image/video/audio to video with sound,
extension, interpolation, editing, references, multi-shot), the request that describes a task, the
sampling config and the output (frames, waveform, .mp4 / .wav). docs/pipeline.md."""

from skyreels_v4.pipeline.output import GenerationOutput, frames_to_uint8
from skyreels_v4.pipeline.pipeline import GenerationDefaults, PreparedGeneration, SkyReelsV4Pipeline
from skyreels_v4.pipeline.refine import RefineConfig, RefinerComponent
from skyreels_v4.pipeline.request import GenerationRequest, Task
from skyreels_v4.pipeline.sampling import SamplingConfig

__all__ = [
    "GenerationDefaults",
    "GenerationOutput",
    "GenerationRequest",
    "PreparedGeneration",
    "RefineConfig",
    "RefinerComponent",
    "SamplingConfig",
    "SkyReelsV4Pipeline",
    "Task",
    "frames_to_uint8",
]
