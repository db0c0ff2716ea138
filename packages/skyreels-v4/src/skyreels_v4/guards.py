"""Non-finite guards: NaN/inf never passes silently (issue 14; the training objective of paper section 4).

One process-wide switch, the same pattern as ``skyreels_attention.value_checks``: checks that read
tensor *values* run by default, are skipped while ``torch.compile`` traces, and can be switched off
for a process (``SKYREELS_FINITE_CHECKS=0`` or ``set_finite_checks(False)``) or for a block
(``with finite_checks(False): ...``); switching off here also switches off the lower packages'
entry-point checks (``FiniteChecks`` of attention, flow-matching, audio VAE). ``check_finite`` costs one host
synchronisation on a GPU, so a hot path that calls it costs nothing when the switch is off.

What uses it: loaded media (``skyreels_v4.audio_vae.load_audio``) and weights
(``check_finite_state``, ``read_safetensors(check_finite=True)``) name the file; the
:class:`NonFiniteGuard` Lightning callback stops a training run *before* the optimiser step (so no
checkpoint holds the poisoned weights) or skips the batch, and says which batch it was.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

import skyreels_attention
import skyreels_audio_vae
import skyreels_flow_matching
from skyreels_v4.errors import NonFiniteError
from skyreels_v4.io import all_finite

__all__ = [
    "ENV_VAR",
    "NonFiniteGuard",
    "OnNonFinite",
    "check_finite",
    "check_finite_state",
    "finite_checks",
    "finite_checks_enabled",
    "set_finite_checks",
]

ENV_VAR = "SKYREELS_FINITE_CHECKS"
_enabled = os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def finite_checks_enabled() -> bool:
    """Whether finiteness checks run now: switched on, and not inside a torch.compile trace."""
    return _enabled and not torch.compiler.is_compiling()


def set_finite_checks(enabled: bool) -> None:
    """Switch finiteness checks on or off for the whole process, including the lower packages'
    entry-point checks (attention, flow-matching, audio VAE: each package's ``set_finite_checks``):
    off sets them to ``OFF``, on sets them back to the default ``CPU`` if they were off (an explicit
    ``ALWAYS`` is kept)."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    _enabled = enabled
    _sync_lower_packages(enabled)


#: The lower packages' own switches (each package is independent, so each has one; same three modes).
_LOWER = (skyreels_attention, skyreels_flow_matching, skyreels_audio_vae)


def _sync_lower_packages(enabled: bool) -> None:
    for package in _LOWER:
        if not enabled:
            package.set_finite_checks(package.FiniteChecks.OFF)
        elif package.get_finite_checks() is package.FiniteChecks.OFF:
            package.set_finite_checks(package.FiniteChecks.CPU)


if not _enabled:
    _sync_lower_packages(False)


@contextlib.contextmanager
def finite_checks(enabled: bool) -> Iterator[None]:
    """Finiteness checks on or off inside the block, restored afterwards (process-wide)."""
    previous, previous_lower = _enabled, [package.get_finite_checks() for package in _LOWER]
    set_finite_checks(enabled)
    try:
        yield
    finally:
        set_finite_checks(previous)
        for package, mode in zip(_LOWER, previous_lower, strict=True):
            package.set_finite_checks(mode)


def _describe(tensor: Tensor) -> str:
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    return f"{nan} NaN and {inf} inf of {tensor.numel()} values"


def check_finite(tensor: Tensor | float, name: str, *, force: bool = False) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if ``tensor`` holds NaN or inf.

    Integer and boolean tensors are always finite. Skipped when the switch is off, unless ``force``
    (used where a non-finite value would be written to disk or decide a run's fate).
    """
    if not (force or finite_checks_enabled()):
        return
    if isinstance(tensor, int | float):
        if not math.isfinite(tensor):
            raise NonFiniteError(f"{name}: expected a finite number, got {tensor}")
        return
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(tensor).__name__}")
    if not all_finite(tensor):
        raise NonFiniteError(f"{name}: expected finite values, got {_describe(tensor)}")


def check_finite_state(state: Mapping[str, Any], source: str) -> None:
    """Check every floating tensor of a state dict; the error names ``source`` (a file) and the key.

    Always runs (``force``): weights decide everything that follows.
    """
    for key, value in state.items():
        if isinstance(value, Tensor):
            check_finite(value, f"{source}: tensor {key!r}", force=True)


class OnNonFinite(enum.Enum):
    """What :class:`NonFiniteGuard` does with a non-finite loss or gradient."""

    STOP = "stop"  # raise NonFiniteError before the optimiser step: no checkpoint holds the result
    SKIP = "skip"  # drop this batch's gradients (the optimiser step changes nothing) and go on


def _gradients(parameters: Iterable[torch.nn.Parameter]) -> Iterator[tuple[torch.nn.Parameter, Tensor]]:
    for parameter in parameters:
        if parameter.grad is not None:
            yield parameter, parameter.grad


class NonFiniteGuard(L.Callback):
    """Stop (or skip the batch) on a non-finite loss or gradient, naming the batch.

    Works with automatic and manual optimisation: the loss is checked in ``on_before_backward``,
    gradients in ``on_before_optimizer_step`` (both run before any weight changes). With ``SKIP``
    every gradient of the optimiser is set to None, so the step leaves its parameters unchanged;
    ``skipped`` lists the (global step, batch index) pairs. Always runs, whatever the switch says.
    """

    def __init__(self, on_nonfinite: OnNonFinite | str = OnNonFinite.STOP) -> None:
        try:
            self.on_nonfinite = OnNonFinite(on_nonfinite)
        except ValueError:
            allowed = [m.value for m in OnNonFinite]
            raise ValueError(f"on_nonfinite: expected one of {allowed}, got {on_nonfinite!r}") from None
        self.skipped: list[tuple[int, int]] = []
        self._batch = (0, 0, 0)  # (epoch, batch index, global step) of the batch in flight
        self._bad_batch: str | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = (trainer.current_epoch, batch_idx, trainer.global_step)
        self._bad_batch = None

    def _where(self) -> str:
        epoch, index, step = self._batch
        return f"global step {step} (epoch {epoch}, batch index {index})"

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        message = f"loss: non-finite value {loss.detach().flatten()[:4].tolist()} at {self._where()}"
        if self.on_nonfinite is OnNonFinite.STOP:
            raise NonFiniteError(f"{message}; training stopped, no checkpoint was written for this step")
        self._bad_batch = message

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        bad = self._bad_batch
        if bad is None:
            grads = list(_gradients(parameters))
            suspects = grads
            if grads and all(type(g) is Tensor for _, g in grads):
                # One reduction over every gradient: a finite total proves them all finite, so the
                # per-tensor search (sharded DTensor gradients always take it) runs only when it is not.
                device = grads[0][1].device
                total = torch.stack([g.detach().sum().float().to(device) for _, g in grads]).sum()
                suspects = [] if bool(torch.isfinite(total)) else grads
            names = {id(p): n for n, p in pl_module.named_parameters()}
            for parameter, grad in suspects:
                if not all_finite(grad):
                    name = names.get(id(parameter), "<unnamed>")
                    bad = f"gradient of {name!r}: {_describe(grad)} at {self._where()}"
                    break
        if bad is None:
            return
        if self.on_nonfinite is OnNonFinite.STOP:
            raise NonFiniteError(f"{bad}; training stopped, no checkpoint was written for this step")
        for parameter in parameters:
            parameter.grad = None
        where = (self._batch[2], self._batch[1])
        if not self.skipped or self.skipped[-1] != where:
            self.skipped.append(where)
            pl_module.print(f"NonFiniteGuard: skipped the batch ({bad})")
