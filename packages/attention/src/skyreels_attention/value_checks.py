"""The switch for checks that read tensor *values* (index ranges, valid lengths, duplicates).

Shape, dtype and device checks are free and always run. Value checks need the data on the host: on
a GPU each costs one device-to-host synchronisation per attention call, which stalls the launch
queue in a training loop. They run by default, are skipped while `torch.compile` traces, and can be
switched off for a whole process (`SKYREELS_ATTENTION_VALUE_CHECKS=0` in the environment, or
`set_value_checks(False)`) or for a block of code (`with value_checks(False): ...`).

Without them, wrong values give wrong results instead of an error; our CPU kernel (`cpp`) stays
memory-safe (it skips out-of-range blocks), the GPU kernels do not promise that.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["ENV_VAR", "set_value_checks", "value_checks", "value_checks_enabled"]

ENV_VAR = "SKYREELS_ATTENTION_VALUE_CHECKS"
_enabled = os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def value_checks_enabled() -> bool:
    """Whether value checks run now: switched on, and not inside a torch.compile trace."""
    return _enabled and not torch.compiler.is_compiling()


def set_value_checks(enabled: bool) -> None:
    """Switch value checks on or off for the whole process."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    _enabled = enabled


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Value checks on or off inside the block, restored afterwards (process-wide, not per thread)."""
    previous = _enabled
    set_value_checks(enabled)
    try:
        yield
    finally:
        set_value_checks(previous)
