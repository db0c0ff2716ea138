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

from skyreels_flow_matching.finite_checks import check_finite

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
    "sample_unipc",
]

State = Tensor | tuple[Tensor, ...]
VelocityFn = Callable[[State, Tensor], State]
StepCallback = Callable[[int, float, State], None]


class Solver(str, enum.Enum):
    """The solvers of this module, for configs and :func:`sample`."""

    EULER = "euler"
    HEUN = "heun"
    DPMPP_2M = "dpmpp_2m"
    UNIPC = "unipc"


# Global order of accuracy (the error at the endpoint falls like N^-order). UniPC's corrector adds
# one order to its predictor's, but its default lower-order final step (as diffusers) caps it at 2;
# `sample_unipc(..., lower_order_final=False)` reaches order + 1 (measured in the tests).
SOLVER_ORDER: dict[Solver, int] = {Solver.EULER: 1, Solver.HEUN: 2, Solver.DPMPP_2M: 2, Solver.UNIPC: 2}


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
        h = _log_snr(sigma_next) - _log_snr(sigma)
        h = h if math.isfinite(h) else None
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


def sample_unipc(
    model_fn: VelocityFn,
    x: State,
    sigmas: Tensor,
    *,
    order: int = 2,
    lower_order_final: bool = True,
    callback: StepCallback | None = None,
) -> State:
    """UniPC (Zhao et al. 2023, arXiv 2302.04867) in flow form, B(h) = e^h - 1 ("bh2"), data prediction.

    Each step predicts with UniP of order ``order`` from the last data predictions
    ``D = x - σ·u`` (exponential integrator in ``λ = log((1-σ)/σ)``, like DPM-Solver++), then, once
    the model has been evaluated at the predicted point, the next step first corrects that point
    with UniC using this new evaluation: one evaluation per step, and the corrector raises the
    order by one. Warm-up steps use lower orders; points at σ = 1 (λ = -∞) are not used as
    history, and a step into σ = 0 (λ = +∞) is always first order. The last step is never
    corrected (no evaluation follows it), so the global order is ``order + 1`` only without
    ``lower_order_final`` and on grids where the last step is small; with
    it (the default, as diffusers) the last ``order - 1`` steps drop to lower orders, which is
    more stable on grids that end at σ = 0 but makes the global order 2. Matches diffusers'
    ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
    solver_type="bh2", solver_order=order)`` on its grid (the scheduler Wan's pipelines use).

    Args:
        order: the predictor's order, 1 to 3 (diffusers' ``solver_order``; default 2).
        lower_order_final: lower the order of the last steps (diffusers' default, True).
    """
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    values, _ = _check_grid(sigmas)
    _check_state(x, "x")
    lambdas = [_log_snr(v) for v in values]
    num_steps = len(values) - 1
    history: list[State] = []  # data predictions at grid points ..., i-1, i (newest last)
    last_x: State | None = None
    last_order = 0
    for i in range(num_steps):
        u = _evaluate(model_fn, x, values[i])
        data = _add_scaled(x, -values[i], u)
        if last_x is not None:  # UniC: correct the point reached by the last prediction
            x = _unipc_update(last_x, history, i - 1, i, last_order, values, lambdas, corrector=data)
        history = [*history[-(order - 1) :], data] if order > 1 else [data]
        # Warm-up, lower order for the final steps, and no history point at σ = 1.
        finite = sum(1 for j in range(i - len(history) + 1, i + 1) if math.isfinite(lambdas[j]))
        remaining = num_steps - i if lower_order_final else order
        this_order = max(1, min(order, remaining, len(history), finite))
        if not math.isfinite(lambdas[i + 1]):
            this_order = 1  # into σ = 0 (λ = +∞) only the first-order step is defined, as DPM++(2M)
        last_x, last_order = x, this_order
        x = _unipc_update(x, history, i, i + 1, this_order, values, lambdas)
        if callback is not None:
            callback(i, values[i + 1], x)
    return x


def _unipc_update(
    x: State,
    history: list[State],
    s0: int,
    t: int,
    order: int,
    values: list[float],
    lambdas: list[float],
    corrector: State | None = None,
) -> State:
    """One UniP step from grid point s0 to t (``corrector`` None), or the UniC correction of the
    point at t reached from ``x`` at s0, given the data prediction ``corrector`` made at t.
    ``history[-1]`` is the data prediction at s0, ``history[-1-k]`` the one at s0 - k."""
    sigma_s0, sigma_t = values[s0], values[t]
    alpha_t = 1.0 - sigma_t
    h = lambdas[t] - lambdas[s0]  # > 0, infinite when leaving σ = 1 or reaching σ = 0
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1  # "bh2": B(h) = e^h - 1 (in -h for the data prediction)
    m0 = history[-1]
    rks: list[float] = []
    differences: list[State] = []
    for k in range(1, order):
        rk = (lambdas[s0 - k] - lambdas[s0]) / h
        rks.append(rk)
        differences.append(_combine(1.0 / rk, history[-1 - k], -1.0 / rk, m0))
    rks.append(1.0)
    # The order conditions R·ρ = b of UniC (UniP uses the leading block).
    matrix, rhs = [], []
    h_phi_k = h_phi_1 / hh - 1.0  # hh = -inf gives -1: the limits are taken by float arithmetic
    factorial = 1
    for k in range(1, order + 1):
        matrix.append([r ** (k - 1) for r in rks])
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    base = _combine(sigma_t / sigma_s0, x, -alpha_t * h_phi_1, m0)
    if corrector is None:
        if not differences:
            return base
        rhos = [0.5] if order == 2 else _solve(matrix[:-1], rhs[:-1], order - 1)
        terms = differences
    else:
        rhos = [0.5] if order == 1 else _solve(matrix, rhs, order)
        terms = [*differences, _combine(1.0, corrector, -1.0, m0)]
    for rho, term in zip(rhos, terms):
        base = _combine(1.0, base, -alpha_t * b_h * rho, term)
    return base


def _solve(matrix: list[list[float]], rhs: list[float], size: int) -> list[float]:
    """Solve the leading ``size x size`` system in float64."""
    a = torch.tensor([row[:size] for row in matrix[:size]], dtype=torch.float64)
    return torch.linalg.solve(a, torch.tensor(rhs[:size], dtype=torch.float64)).tolist()


_SOLVERS: dict[Solver, Callable[..., State]] = {
    Solver.EULER: sample_euler,
    Solver.HEUN: sample_heun,
    Solver.DPMPP_2M: sample_dpmpp_2m,
    Solver.UNIPC: sample_unipc,
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
    """λ = log(α/σ) with α = 1 - σ: -inf at σ = 1 (pure noise), +inf at σ = 0 (data)."""
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
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
    for index, leaf in enumerate(leaves):
        check_finite(leaf, name if len(leaves) == 1 else f"{name}[{index}]")


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
    # The loop state changes only by finite multiples of u: checking u each step keeps it finite.
    for index, leaf in enumerate(u_leaves):
        which = "" if len(u_leaves) == 1 else f"[{index}]"
        check_finite(leaf, f"model_fn output{which} at sigma={sigma:.6g}")
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
