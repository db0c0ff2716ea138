"""Inference σ grids from 1 (noise) to 0 (data), with the time shift.

Two forms, both ending with σ = 0 and both ``[num_steps + 1]`` long (the solvers step from
``sigmas[i]`` to ``sigmas[i + 1]``):

- ``SHIFT_ONCE``: ``shift(linspace(1, 0, N + 1))``: the shift applied once to a uniform grid.
- ``DIFFUSERS``: reproduces ``FlowMatchEulerDiscreteScheduler.set_timesteps(N)`` (diffusers 0.42,
  static shift, no Karras/exponential/beta options) value for value. That scheduler first builds a
  1000-step training table that is already shifted, so its smallest σ is ``shift(1/1000)``; it then
  interpolates linearly between ``1`` and that *shifted* endpoint with N points and shifts the
  interpolated values a second time, and appends 0. The last non-zero σ is therefore
  ``shift(shift(1/1000))`` rather than ``shift(1/N)``, and the grid is not ``shift`` of a uniform
  grid. Use this form when matching diffusers (HunyuanVideo/Wan pipelines) number for number.

Diffusers' *dynamic* shifting (``use_dynamic_shifting=True, mu``) does not pre-shift the table: its
grid is ``exp(mu)``-shifted ``linspace(1, 1/1000, N)`` (one shift), matched by neither form.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor

from skyreels_flow_matching.conventions import DEFAULT_NUM_TRAIN_TIMESTEPS, shift_sigmas

__all__ = ["ScheduleForm", "flow_sigmas"]


class ScheduleForm(str, enum.Enum):
    """Which σ grid :func:`flow_sigmas` builds."""

    SHIFT_ONCE = "shift_once"
    DIFFUSERS = "diffusers"


def flow_sigmas(
    num_steps: int,
    *,
    shift: float = 1.0,
    form: ScheduleForm = ScheduleForm.SHIFT_ONCE,
    num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The σ grid for ``num_steps`` solver steps.

    Args:
        num_steps: N >= 1.
        shift: time shift s > 0 (1 = none); see :func:`~skyreels_flow_matching.resolve_shift`.
        form: ``SHIFT_ONCE`` or ``DIFFUSERS`` (module docstring).
        num_train_timesteps: size of diffusers' training table (``DIFFUSERS`` only).
        dtype, device: of the result. ``DIFFUSERS`` matches diffusers bit for bit in float32.
    Returns:
        ``[N + 1]`` strictly decreasing from 1 to 0. The model timestep is ``1000 · sigmas[:-1]``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if not isinstance(form, ScheduleForm):
        raise TypeError(f"form must be a ScheduleForm, got {form!r}")
    if form is ScheduleForm.SHIFT_ONCE:
        grid = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
        sigmas = shift_sigmas(grid, shift).to(dtype)
    else:
        sigmas = _diffusers_flow_match_euler_sigmas(num_steps, shift, num_train_timesteps).to(dtype)
    return sigmas.to(device) if device is not None else sigmas


def _diffusers_flow_match_euler_sigmas(num_steps: int, shift: float, num_train_timesteps: int) -> Tensor:
    """FlowMatchEulerDiscreteScheduler's grid, replaying its float32/float64 arithmetic step by step."""
    if (
        isinstance(num_train_timesteps, bool)
        or not isinstance(num_train_timesteps, int)
        or num_train_timesteps < 1
    ):
        raise ValueError(f"num_train_timesteps must be an int >= 1, got {num_train_timesteps!r}")
    # 1. The training table's ends, shifted once in float32 (scheduler __init__).
    table_ends = torch.tensor([float(num_train_timesteps), 1.0], dtype=torch.float32) / num_train_timesteps
    table_ends = shift_sigmas(table_ends, shift)
    sigma_max, sigma_min = float(table_ends[0]), float(table_ends[1])
    # 2. numpy.linspace in float64 between the shifted ends, in timestep units (set_timesteps):
    #    start + i·step, with the last value set to the end point exactly.
    start, stop = sigma_max * num_train_timesteps, sigma_min * num_train_timesteps
    if num_steps == 1:
        timesteps = torch.tensor([start], dtype=torch.float64)
    else:
        step = (stop - start) / (num_steps - 1)
        timesteps = torch.arange(num_steps, dtype=torch.float64) * step + start
        timesteps[-1] = stop
    # 3. The second shift, in float64, then float32 and the terminal zero.
    sigmas = shift_sigmas(timesteps / num_train_timesteps, shift).to(torch.float32)
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float32)])
