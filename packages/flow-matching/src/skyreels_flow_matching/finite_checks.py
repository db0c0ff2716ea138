"""Finiteness checks at this package's public entry points (issue 14: NaN/inf never passes silently).

A NaN or inf in an input spreads through every later result without a word; these checks stop it
where it enters and name the argument. They are switchable because reading a tensor's values has a
cost that differs by device:

* :attr:`FiniteChecks.CPU` (default): check tensors on the CPU, where the check is one extra pass
  over memory that is already being read (cheap next to the work it guards) and needs no
  synchronisation; tensors on an accelerator pass unchecked, so GPU hot paths keep no host sync.
* :attr:`FiniteChecks.ALWAYS`: every device (one device-to-host sync per checked call on a GPU,
  meant for debugging a run that produces NaN).
* :attr:`FiniteChecks.OFF`: no checks.

The switch is process-wide (``set_finite_checks``) or for a block (``with finite_checks(...)``).
Checks never run while ``torch.compile`` traces (they would break the graph).

Checked here: the solvers' initial state ``x`` and ``model_fn``'s velocity at every step (the loop
state changes only by it). skyreels-flow-matching depends on no other package, hence its own switch.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "FiniteChecks",
    "NonFiniteInputError",
    "check_finite",
    "finite_checks",
    "get_finite_checks",
    "set_finite_checks",
]


class NonFiniteInputError(ValueError):
    """An input that must be finite holds NaN or inf; the message names the argument."""


class FiniteChecks(enum.Enum):
    """Which tensors the finiteness checks read (module docstring)."""

    CPU = "cpu"
    ALWAYS = "always"
    OFF = "off"


_mode = FiniteChecks.CPU


def set_finite_checks(mode: FiniteChecks) -> None:
    """Set the finiteness-check mode for the whole process."""
    global _mode
    if not isinstance(mode, FiniteChecks):
        raise TypeError(f"mode: expected a FiniteChecks, got {mode!r}")
    _mode = mode


def get_finite_checks() -> FiniteChecks:
    """The current mode."""
    return _mode


@contextlib.contextmanager
def finite_checks(mode: FiniteChecks) -> Iterator[None]:
    """The finiteness-check ``mode`` inside the block, restored afterwards (process-wide)."""
    previous = _mode
    set_finite_checks(mode)
    try:
        yield
    finally:
        set_finite_checks(previous)


def _is_symbolic(tensor: Tensor) -> bool:
    """True for tensors without values to read: meta tensors and fake tensors (shape propagation,
    FLOP counting, tracing)."""
    if tensor.device.type == "meta":
        return True
    from torch._subclasses.fake_tensor import is_fake

    return bool(is_fake(tensor))


def check_finite(tensor: Tensor | None, name: str) -> None:
    """Raise :class:`NonFiniteInputError` naming ``name`` if ``tensor`` (floating) holds NaN or inf,
    under the current mode. None and non-floating tensors pass."""
    if tensor is None or _mode is FiniteChecks.OFF or not isinstance(tensor, Tensor):
        return
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    if _mode is FiniteChecks.CPU and tensor.device.type != "cpu":
        return
    if torch.compiler.is_compiling() or _is_symbolic(tensor):
        return
    values = tensor.detach()
    # One reduction: a finite sum proves every element finite (NaN and inf propagate into it); only a
    # non-finite sum (a real NaN/inf, or an overflow) pays for the exact elementwise test.
    if bool(torch.isfinite(values.sum())):
        return
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    nan = int(torch.isnan(values).sum())
    inf = int((~finite).sum()) - nan
    raise NonFiniteInputError(
        f"{name}: expected finite values, got {nan} NaN and {inf} inf of {tensor.numel()} "
        f"(shape {list(tensor.shape)}; switch the check with set_finite_checks)"
    )
