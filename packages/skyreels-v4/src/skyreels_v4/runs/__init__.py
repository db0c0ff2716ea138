"""The one mechanism every recipe uses to survive (issue 14): exact resume, run identity,
pre-flight checks, atomic typed checkpoints, the step's random draws (:func:`step_generator`) and
the optimizer (:func:`adamw`). A recipe's ``train.py`` calls :func:`run_recipe` and
builds its training loader with :func:`dataloader` (docs/reliability.md)."""

from skyreels_v4.runs.checkpoints import AtomicCheckpointIO, other_checkpoints, read_checkpoint
from skyreels_v4.runs.data import (
    ResumableSampler,
    SeededIndex,
    check_same_replicas,
    data_parallel_of,
    dataloader,
    item_generator,
    mix_seed,
    step_generator,
)
from skyreels_v4.runs.identity import RESUMABLE_KEYS, check_same_run, flatten_config
from skyreels_v4.runs.optim import adamw, clipping_in_mixed_precision, fused_adamw_supported
from skyreels_v4.runs.preflight import (
    DataPreflight,
    check_matches,
    check_writable,
    output_folders,
    run_preflight,
)
from skyreels_v4.runs.recipe import RecipeCLI, find_last_checkpoint, run_recipe
from skyreels_v4.runs.rng import capture_rng, restore_rng
from skyreels_v4.runs.state import RunState

__all__ = [
    "RESUMABLE_KEYS",
    "AtomicCheckpointIO",
    "DataPreflight",
    "RecipeCLI",
    "ResumableSampler",
    "RunState",
    "SeededIndex",
    "adamw",
    "capture_rng",
    "check_matches",
    "check_same_replicas",
    "check_same_run",
    "check_writable",
    "clipping_in_mixed_precision",
    "data_parallel_of",
    "dataloader",
    "find_last_checkpoint",
    "flatten_config",
    "fused_adamw_supported",
    "item_generator",
    "mix_seed",
    "other_checkpoints",
    "output_folders",
    "read_checkpoint",
    "restore_rng",
    "run_preflight",
    "run_recipe",
    "step_generator",
]
