"""Run identity: the configuration that made a run folder, and the check that a rerun matches it.

A resolved LightningCLI configuration is flattened to dotted keys (``model.vae.sample_rate``).
A rerun may change only the keys in :data:`RESUMABLE_KEYS` (how long to train, how much to print);
any other difference is a :class:`~skyreels_v4.errors.ConfigMismatchError` that lists the keys with
both values, and says how to start a new run from the checkpoint instead (``--fork_from``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from skyreels_v4.errors import ConfigMismatchError

__all__ = ["IGNORED_KEYS", "RESUMABLE_KEYS", "check_same_run", "flatten_config"]

# Keys that never define a run: which files the config came from and where it resumes from.
# (``fork_from`` does: a fork is a new run, and rerunning the fork command resumes the fork.)
IGNORED_KEYS = frozenset({"config", "ckpt_path"})
# Keys a rerun may change and still continue the same run.
RESUMABLE_KEYS = frozenset(
    {
        "trainer.max_steps",
        "trainer.max_epochs",
        "trainer.max_time",
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
        "trainer.log_every_n_steps",
    }
)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": plain JSON value}`` (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = _plain(value)
    return {k: v for k, v in flat.items() if k.split(".")[0] not in IGNORED_KEYS}


def check_same_run(stored: Mapping[str, Any], given: Mapping[str, Any], *, checkpoint: str) -> None:
    """Raise ConfigMismatchError if two flattened configs differ outside ``RESUMABLE_KEYS``."""
    keys = sorted((set(stored) | set(given)) - RESUMABLE_KEYS)
    missing = object()
    differing = [k for k in keys if stored.get(k, missing) != given.get(k, missing)]
    if not differing:
        return

    def show(value: Any) -> str:
        return "<absent>" if value is missing else repr(value)

    lines = [
        f"{k}: run has {show(stored.get(k, missing))}, given {show(given.get(k, missing))}"
        for k in differing[:8]
    ]
    more = f" (and {len(differing) - 8} more)" if len(differing) > 8 else ""
    raise ConfigMismatchError(
        f"config: {checkpoint} belongs to a run made with a different configuration; differing keys: "
        + "; ".join(lines)
        + more
        + ". Rerun with the run's own config to resume it, use a new output folder for a new run, or "
        f"start a new run from its weights with --fork_from {checkpoint} (and a new output folder)"
    )
