"""ODE solvers for ``dx/dσ = u(x, σ)`` from σ = sigmas[0] down to sigmas[-1] (k-diffusion style).

Every solver is a small pure function with one signature::

    sample_<name>(model_fn, x, sigmas, *, callback=None) -> x_end

- ``model_fn(x, sigma) -> u``: the velocity ``u = ε - x0`` at state ``x`` and noise level ``sigma``
  (a float32 tensor ``[B]``, all entries equal), e.g. a :class:`~skyreels_flow_matching.JointGuidedDenoiser`.
- ``x``: the state, one tensor ``[B, ...]`` or a tuple of them (``(video [B, C, T, H, W], audio
  [B, C, L])``); every tensor is moved by the same σ grid.
- ``sigmas``: a 1-D grid, strictly decreasing, in [0, 1] (see :func:`~skyreels_flow_matching.flow_sigmas`).
- ``callback(i, sigma_next, x)``: called after step i with the new state.

Step sizes ``sigmas[i+1] - sigmas[i]`` are taken in the grid's dtype, so a float32 grid steps exactly
like diffusers' schedulers. The state keeps its own dtype; pass float32 latents for accuracy.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "SOLVER_ORDER",
    "Solver",
    "State",
    "StepCallback",
    "VelocityFn",
    "num_model_evaluations",
    "sample",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
]

State = Tensor | tuple[Tensor, ...]
VelocityFn = Callable[[State, Tensor], State]
StepCallback = Callable[[int, float, State], None]


class Solver(str, enum.Enum):
    """The solvers of this module, for configs and :func:`sample`."""

    EULER = "euler"
    HEUN = "heun"
    DPMPP_2M = "dpmpp_2m"


# Global order of accuracy (the error at the endpoint falls like N^-order).
SOLVER_ORDER: dict[Solver, int] = {Solver.EULER: 1, Solver.HEUN: 2, Solver.DPMPP_2M: 2}


def sample_euler(
    model_fn: VelocityFn, x: State, sigmas: Tensor, *, callback: StepCallback | None = None
) -> State:
    """Explicit Euler: ``x ← x + (σ_{i+1} - σ_i)·u(x, σ_i)``. First order, one evaluation per step.

    Identical, step for step, to diffusers' ``FlowMatchEulerDiscreteScheduler.step``.
    """
    values, steps = _check_grid(sigmas)
    _check_state(x, "x")
    for i, dt in enumerate(steps):
        u = _evaluate(model_fn, x, values[i])
        x = _add_scaled(x, dt, u)
        if callback is not None:
            callback(i, values[i + 1], x)
    return x


def sample_heun(
    model_fn: VelocityFn, x: State, sigmas: Tensor, *, callback: StepCallback | None = None
) -> State:
    """Heun's method (Karras et al. 2022, Algorithm 1, deterministic): second order.

    An Euler predictor, then the trapezoid corrector with the velocity at the predicted point. As
    in Algorithm 1 the step into σ = 0 is a plain Euler step (2N - 1 evaluations for a grid ending at
    0); a single first-order step does not change the global order.
    """
    values, steps = _check_grid(sigmas)
    _check_state(x, "x")
    for i, dt in enumerate(steps):
        u = _evaluate(model_fn, x, values[i])
        x_euler = _add_scaled(x, dt, u)
        if values[i + 1] == 0.0:
            x = x_euler
        else:
            u_next = _evaluate(model_fn, x_euler, values[i + 1])
            x = _add_scaled(x, dt, _map(lambda ui, uj: 0.5 * (ui + uj), u, u_next))
        if callback is not None:
            callback(i, values[i + 1], x)
    return x


def sample_dpmpp_2m(
    model_fn: VelocityFn, x: State, sigmas: Tensor, *, callback: StepCallback | None = None
) -> State:
    """DPM-Solver++(2M) in flow form (Lu et al. 2022, arXiv 2211.01095, Algorithm 2): second order.

    With ``α = 1 - σ`` and ``λ = log(α/σ)``, each step integrates the data prediction
    ``D = x - σ·u`` exactly in λ: ``x_{i+1} = (σ_{i+1}/σ_i)·x_i + (α_{i+1} - α_i·σ_{i+1}/σ_i)·D'``,
    with ``D' = D_i`` (first order, equal to an Euler step) or, multistep,
    ``D' = (1 + 1/(2r))·D_i - 1/(2r)·D_{i-1}``, ``r = h_{i-1}/h_i``, ``h = λ_{i+1} - λ_i``.
    First order where the previous step started at σ = 1 (λ = -∞, so r = ∞) and for the step into
    σ = 0 (as diffusers' ``final_sigmas_type="zero"``); one evaluation per step. Matches diffusers'
    ``DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True)`` on its grid.
    """
    values, _ = _check_grid(sigmas)
    _check_state(x, "x")
    old_data: State | None = None
    old_h: float | None = None
    for i in range(len(values) - 1):
        sigma, sigma_next = values[i], values[i + 1]
        u = _evaluate(model_fn, x, sigma)
        data = _add_scaled(x, -sigma, u)
        # λ-step h; undefined (infinite) when leaving σ = 1 or reaching σ = 0.
        h = _log_snr(sigma_next) - _log_snr(sigma) if 0.0 < sigma < 1.0 and sigma_next > 0.0 else None
        if old_data is None or old_h is None or h is None:
            data_blend = data
        else:
            half_inv_r = 0.5 * h / old_h  # 1/(2r), r = h_{i-1}/h_i
            data_blend = _combine(1.0 + half_inv_r, data, -half_inv_r, old_data)
        ratio = sigma_next / sigma
        x = _combine(ratio, x, (1.0 - sigma_next) - (1.0 - sigma) * ratio, data_blend)
        old_data, old_h = data, h
        if callback is not None:
            callback(i, sigma_next, x)
    return x


_SOLVERS: dict[Solver, Callable[..., State]] = {
    Solver.EULER: sample_euler,
    Solver.HEUN: sample_heun,
    Solver.DPMPP_2M: sample_dpmpp_2m,
}


def sample(
    model_fn: VelocityFn,
    x: State,
    sigmas: Tensor,
    *,
    solver: Solver = Solver.EULER,
    callback: StepCallback | None = None,
) -> State:
    """Run ``solver`` over the grid; same arguments and result as the ``sample_*`` functions."""
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a Solver, got {solver!r}")
    return _SOLVERS[solver](model_fn, x, sigmas, callback=callback)


def num_model_evaluations(solver: Solver, sigmas: Tensor) -> int:
    """How many times ``solver`` calls ``model_fn`` on this grid."""
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a Solver, got {solver!r}")
    values, _ = _check_grid(sigmas)
    num_steps = len(values) - 1
    if solver is Solver.HEUN:
        return 2 * num_steps - sum(1 for v in values[1:] if v == 0.0)
    return num_steps


def _log_snr(sigma: float) -> float:
    """λ = log(α/σ) with α = 1 - σ (finite for 0 < σ < 1)."""
    return math.log(1.0 - sigma) - math.log(sigma)


def _check_grid(sigmas: Tensor) -> tuple[list[float], list[float]]:
    """Validate the grid once (one host sync) and return its values and step sizes as floats."""
    if not isinstance(sigmas, Tensor):
        raise TypeError(f"sigmas must be a torch.Tensor, got {type(sigmas).__name__}")
    if sigmas.ndim != 1 or sigmas.shape[0] < 2 or not sigmas.is_floating_point():
        raise ValueError(
            f"sigmas must be a 1-D floating point tensor with at least 2 entries, got shape "
            f"{list(sigmas.shape)} and dtype {sigmas.dtype}"
        )
    values = sigmas.tolist()
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"sigmas must lie in [0, 1], got {values}")
    if not all(a > b for a, b in itertools.pairwise(values)):
        raise ValueError(f"sigmas must be strictly decreasing, got {values}")
    # Differences in the grid's own dtype (as diffusers' `sigma_next - sigma`), then floats.
    steps = (sigmas[1:] - sigmas[:-1]).tolist()
    return values, steps


def _check_state(x: State, name: str) -> None:
    leaves = x if isinstance(x, tuple) else (x,)
    if not leaves or not all(isinstance(leaf, Tensor) for leaf in leaves):
        raise TypeError(f"{name} must be a tensor or a non-empty tuple of tensors, got {type(x).__name__}")
    batch = leaves[0].shape[0] if leaves[0].ndim else None
    if batch is None or any(leaf.ndim == 0 or leaf.shape[0] != batch for leaf in leaves):
        raise ValueError(
            f"every tensor of {name} must have the same leading batch size, got shapes "
            f"{[list(leaf.shape) for leaf in leaves]}"
        )


def _evaluate(model_fn: VelocityFn, x: State, sigma: float) -> State:
    """Call the model at one σ and check that the velocity has the structure of the state."""
    first = x[0] if isinstance(x, tuple) else x
    sigma_batch = torch.full((first.shape[0],), sigma, dtype=torch.float32, device=first.device)
    u = model_fn(x, sigma_batch)
    x_leaves = x if isinstance(x, tuple) else (x,)
    u_leaves = u if isinstance(u, tuple) else (u,)
    if (
        isinstance(u, tuple) != isinstance(x, tuple)
        or len(u_leaves) != len(x_leaves)
        or any(not isinstance(ui, Tensor) or ui.shape != xi.shape for ui, xi in zip(u_leaves, x_leaves))
    ):
        raise ValueError(
            "model_fn must return a velocity with the structure and shapes of the state "
            f"{_describe(x)}, got {_describe(u)}"
        )
    return u


def _add_scaled(x: State, scale: float, u: State) -> State:
    """``x + scale·u`` leaf by leaf (the exact expression diffusers' Euler step evaluates)."""
    return _map(lambda xi, ui: xi + scale * ui, x, u)


def _combine(a: float, x: State, b: float, y: State) -> State:
    """``a·x + b·y`` leaf by leaf."""
    return _map(lambda xi, yi: a * xi + b * yi, x, y)


def _map(fn: Callable[..., Tensor], *states: State) -> State:
    """Apply ``fn`` leaf by leaf to states of equal structure."""
    if isinstance(states[0], tuple):
        return tuple(fn(*leaves) for leaves in zip(*states))
    return fn(*states)


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor {list(x.shape)}"
    if isinstance(x, Sequence) and not isinstance(x, str):
        return "(" + ", ".join(_describe(v) for v in x) + ")"
    return type(x).__name__
