"""Solvers: parity with diffusers, exact endpoints and convergence order on a Gaussian flow."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from skyreels_flow_matching import (
    SOLVER_ORDER,
    GaussianFlowProblem,
    ScheduleForm,
    Solver,
    flow_sigmas,
    num_model_evaluations,
    sample,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sample_unipc,
)


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
@pytest.mark.parametrize("num_steps", [10, 30, 50])
def test_euler_trajectory_is_bit_exact_with_diffusers(velocity_fn, shift, num_steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(num_steps)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    reference, latents = [], x.clone()
    for i, timestep in enumerate(scheduler.timesteps):
        u = velocity_fn(latents, scheduler.sigmas[i].expand(2))
        latents = scheduler.step(u, timestep, latents).prev_sample
        reference.append(latents)
    ours = []
    sigmas = flow_sigmas(num_steps, shift=shift, form=ScheduleForm.DIFFUSERS)
    final = sample_euler(velocity_fn, x, sigmas, callback=lambda i, s, y: ours.append(y))
    assert len(ours) == num_steps
    for step, (a, b) in enumerate(zip(ours, reference)):
        assert torch.equal(a, b), f"step {step} differs by {(a - b).abs().max().item()}"
    assert torch.equal(final, reference[-1])


def _diffusers_endpoint(scheduler, velocity_fn, x: torch.Tensor) -> torch.Tensor:
    """Run a diffusers multistep scheduler (already `set_timesteps`) from x with velocity_fn."""
    latents = x.clone()
    for i, timestep in enumerate(scheduler.timesteps):
        u = velocity_fn(latents, scheduler.sigmas[i].expand(x.shape[0]))
        latents = scheduler.step(u, timestep, latents).prev_sample
    return latents


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
@pytest.mark.parametrize("num_steps", [5, 10, 20])
def test_dpmpp_2m_matches_diffusers_flow_multistep(velocity_fn, shift, num_steps):
    scheduler = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        algorithm_type="dpmsolver++",
    )
    scheduler.set_timesteps(num_steps)
    x = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    ours = sample_dpmpp_2m(velocity_fn, x, scheduler.sigmas)
    # diffusers evaluates the same update in float32 tensors, we in float64 coefficients
    torch.testing.assert_close(ours, _diffusers_endpoint(scheduler, velocity_fn, x), rtol=0, atol=2e-5)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("shift", [1.0, 5.0])
@pytest.mark.parametrize("num_steps", [5, 10, 25])
def test_unipc_matches_diffusers_flow_multistep(velocity_fn, order, shift, num_steps):
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, solver_order=order
    )
    scheduler.set_timesteps(num_steps)
    x = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    ours = sample_unipc(velocity_fn, x, scheduler.sigmas, order=order)
    torch.testing.assert_close(ours, _diffusers_endpoint(scheduler, velocity_fn, x), rtol=0, atol=1e-5)


def _gaussian_case():
    g = torch.Generator().manual_seed(0)
    problem = GaussianFlowProblem(mean=torch.randn(3, 8, generator=g, dtype=torch.float64), std=0.5)
    noise = torch.randn(4, 3, 8, generator=g, dtype=torch.float64)
    return problem, noise


def _endpoint_error(solver: Solver, sigmas: torch.Tensor) -> float:
    problem, noise = _gaussian_case()
    exact = problem.solution(noise, sigmas[0].item(), sigmas[-1].item())
    return (sample(problem.velocity, noise, sigmas, solver=solver) - exact).abs().max().item()


def _fitted_order(solver: Solver, grids: list[torch.Tensor], log_correction: bool = False) -> float:
    """Least-squares slope of -log(error) against log(N) (optionally of error / log N)."""
    log_n = torch.tensor([math.log(len(g) - 1) for g in grids], dtype=torch.float64)
    errors = torch.tensor([_endpoint_error(solver, g) for g in grids], dtype=torch.float64)
    if log_correction:
        errors = errors / log_n
    log_e = errors.log()
    centred = log_n - log_n.mean()
    return float(-(centred * (log_e - log_e.mean())).sum() / centred.square().sum())


def test_the_analytic_solution_is_a_solution():
    """Sanity of the reference: u(x(σ), σ) equals dx/dσ of the closed form along the path."""
    problem, noise = _gaussian_case()
    for sigma in (0.9, 0.5, 0.1):
        h = 1e-6
        x = problem.solution(noise, 1.0, sigma)
        derivative = (problem.solution(noise, 1.0, sigma + h) - problem.solution(noise, 1.0, sigma - h)) / (
            2 * h
        )
        torch.testing.assert_close(problem.velocity(x, sigma), derivative, rtol=0, atol=1e-8)
    torch.testing.assert_close(problem.solution(noise, 1.0, 0.0), problem.mean + 0.5 * noise)


@pytest.mark.parametrize(
    ("solver", "tolerance"),
    [(Solver.EULER, 0.15), (Solver.HEUN, 0.02), (Solver.DPMPP_2M, 0.03), (Solver.UNIPC, 0.03)],
)
@pytest.mark.parametrize("form", list(ScheduleForm))
@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
def test_every_solver_reaches_the_exact_endpoint(solver, tolerance, form, shift):
    # |x0| reaches 2.7 in this problem; the tolerance is per solver at 128 steps
    sigmas = flow_sigmas(128, shift=shift, form=form, dtype=torch.float64)
    assert _endpoint_error(solver, sigmas) < tolerance


@pytest.mark.parametrize("solver", [Solver.EULER, Solver.HEUN])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_order_on_grids_from_noise_to_data(solver, shift):
    # DPM-Solver++(2M) on these grids: test_dpmpp_2m_order_on_grids_ending_at_zero
    grids = [flow_sigmas(n, shift=shift, dtype=torch.float64) for n in (8, 16, 32, 64)]
    assert _fitted_order(solver, grids) == pytest.approx(SOLVER_ORDER[solver], abs=0.15)


@pytest.mark.parametrize("solver", [Solver.EULER, Solver.HEUN, Solver.DPMPP_2M])
def test_order_on_interior_grids(solver):
    grids = [torch.linspace(0.98, 0.02, n + 1, dtype=torch.float64) for n in (8, 16, 32, 64)]
    assert _fitted_order(solver, grids) == pytest.approx(SOLVER_ORDER[solver], abs=0.2)


@pytest.mark.parametrize(
    ("order", "lower_order_final", "expected"),
    [(2, True, 2.0), (2, False, 3.0), (3, False, 4.0), (1, True, 2.0)],
)
def test_unipc_order(order, lower_order_final, expected):
    """The corrector adds one order to the predictor's; an uncorrected low-order last step caps it at 2.

    On a grid of moderate λ steps (σ from 0.9 to 0.3): on grids reaching σ near 0 the last steps
    are long in λ and the error is far from its asymptote at these N.
    """
    problem, noise = _gaussian_case()
    grids = [torch.linspace(0.9, 0.3, n + 1, dtype=torch.float64) for n in (64, 128, 256)]
    log_n = torch.tensor([math.log(len(g) - 1) for g in grids], dtype=torch.float64)
    errors = []
    for g in grids:
        exact = problem.solution(noise, g[0].item(), g[-1].item())
        got = sample_unipc(problem.velocity, noise, g, order=order, lower_order_final=lower_order_final)
        errors.append((got - exact).abs().max().item())
    log_e = torch.tensor(errors, dtype=torch.float64).log()
    centred = log_n - log_n.mean()
    fitted = float(-(centred * (log_e - log_e.mean())).sum() / centred.square().sum())
    assert fitted == pytest.approx(expected, abs=0.2)


def test_unipc_from_pure_noise_to_data_and_bad_order(velocity_fn):
    """A grid from σ = 1 (λ = -∞, never used as history) to σ = 0 stays finite and accurate:
    orders 2 and 3 beat DPM-Solver++(2M) on it (same evaluations), order 1 is within 0.05."""
    problem, noise = _gaussian_case()
    sigmas = flow_sigmas(64, shift=3.0, dtype=torch.float64)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    exact = problem.solution(noise, 1.0, 0.0)
    dpm_error = (sample_dpmpp_2m(problem.velocity, noise, sigmas) - exact).abs().max()
    for order, bound in ((1, 0.05), (2, dpm_error), (3, dpm_error)):
        out = sample_unipc(problem.velocity, noise, sigmas, order=order)
        assert torch.isfinite(out).all()
        assert (out - exact).abs().max() < bound, order
    for order in (2, 3):  # without lower_order_final the step into σ = 0 must still be first order
        out = sample_unipc(problem.velocity, noise, sigmas, order=order, lower_order_final=False)
        assert torch.isfinite(out).all() and (out - exact).abs().max() < 0.05
    with pytest.raises(ValueError, match="order must be 1, 2 or 3, got 4"):
        sample_unipc(velocity_fn, noise, sigmas, order=4)


def test_dpmpp_2m_order_on_grids_ending_at_zero():
    """λ = log((1-σ)/σ) steps do not shrink near σ = 0, which costs a log factor: error ~ log(N)/N²."""
    grids = [flow_sigmas(n, dtype=torch.float64) for n in (32, 64, 128, 256)]
    plain = _fitted_order(Solver.DPMPP_2M, grids)
    corrected = _fitted_order(Solver.DPMPP_2M, grids, log_correction=True)
    assert 1.5 < plain < 2.0
    assert corrected == pytest.approx(2.0, abs=0.2)


def test_tuple_state_moves_each_tensor_like_alone():
    g = torch.Generator().manual_seed(2)
    video_problem = GaussianFlowProblem(
        mean=torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), std=0.7
    )
    audio_problem = GaussianFlowProblem(mean=torch.randn(3, 9, generator=g, dtype=torch.float64), std=1.3)
    video = torch.randn(2, 2, 3, 4, 4, generator=g, dtype=torch.float64)
    audio = torch.randn(2, 3, 9, generator=g, dtype=torch.float64)

    def joint(x, sigma):
        return video_problem.velocity(x[0], sigma), audio_problem.velocity(x[1], sigma)

    sigmas = flow_sigmas(12, shift=3.0, dtype=torch.float64)
    for solver in Solver:
        video_out, audio_out = sample(joint, (video, audio), sigmas, solver=solver)
        assert torch.equal(video_out, sample(video_problem.velocity, video, sigmas, solver=solver))
        assert torch.equal(audio_out, sample(audio_problem.velocity, audio, sigmas, solver=solver))


@pytest.mark.parametrize("solver", list(Solver))
def test_evaluation_count_sigma_batch_and_callback(velocity_fn, solver):
    calls = []

    def counting(x, sigma):
        calls.append(sigma.clone())
        return velocity_fn(x, sigma)

    steps = []
    sigmas = flow_sigmas(6, shift=3.0)
    sample(counting, torch.zeros(3, 5), sigmas, solver=solver, callback=lambda i, s, x: steps.append((i, s)))
    assert len(calls) == num_model_evaluations(solver, sigmas)
    assert num_model_evaluations(solver, sigmas) == (11 if solver is Solver.HEUN else 6)
    assert all(c.shape == (3,) and c.dtype == torch.float32 and bool((c == c[0]).all()) for c in calls)
    assert calls[0][0].item() == 1.0
    assert [i for i, _ in steps] == list(range(6))
    assert [s for _, s in steps] == sigmas[1:].tolist()
    # Heun corrects with the velocity at the next σ except for the step into 0
    if solver is Solver.HEUN:
        assert num_model_evaluations(solver, torch.tensor([1.0, 0.5, 0.2])) == 4


def test_heun_and_dpm_first_steps_are_euler(velocity_fn):
    """From σ = 1 the multistep solver has no history (λ = -∞): its first two steps are Euler steps."""
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigmas = torch.tensor([1.0, 0.7, 0.4], dtype=torch.float64)
    torch.testing.assert_close(
        sample_dpmpp_2m(velocity_fn, x, sigmas), sample_euler(velocity_fn, x, sigmas), rtol=0, atol=1e-14
    )
    # Heun into σ = 0 is a single Euler step
    to_zero = torch.tensor([0.3, 0.0], dtype=torch.float64)
    assert torch.equal(sample_heun(velocity_fn, x, to_zero), sample_euler(velocity_fn, x, to_zero))


@pytest.mark.parametrize(
    ("sigmas", "match"),
    [
        (torch.tensor([1.0]), "at least 2 entries"),
        (torch.ones(2, 2), "1-D floating point tensor"),
        (torch.tensor([1, 0]), "1-D floating point tensor"),
        (torch.tensor([0.0, 1.0]), "strictly decreasing"),
        (torch.tensor([1.0, 1.0, 0.0]), "strictly decreasing"),
        (torch.tensor([1.5, 0.0]), r"must lie in \[0, 1\]"),
        (torch.tensor([1.0, float("nan")]), r"must lie in \[0, 1\]"),
    ],
)
def test_bad_grids_raise(velocity_fn, sigmas, match):
    for solver in Solver:
        with pytest.raises(ValueError, match=match):
            sample(velocity_fn, torch.zeros(1, 2), sigmas, solver=solver)


def test_bad_states_and_models_raise(velocity_fn):
    sigmas = flow_sigmas(2)
    with pytest.raises(TypeError, match="x must be a tensor or a non-empty tuple of tensors"):
        sample_euler(velocity_fn, [torch.zeros(1, 2)], sigmas)
    with pytest.raises(ValueError, match="same leading batch size"):
        sample_euler(velocity_fn, (torch.zeros(1, 2), torch.zeros(2, 2)), sigmas)
    with pytest.raises(ValueError, match=r"model_fn must return a velocity with the structure and shapes"):
        sample_heun(lambda x, s: x[:, :1], torch.zeros(1, 2), sigmas)
    with pytest.raises(ValueError, match=r"model_fn must return a velocity with the structure and shapes"):
        sample_dpmpp_2m(lambda x, s: x[0], (torch.zeros(1, 2), torch.zeros(1, 3)), sigmas)
    with pytest.raises(TypeError, match="solver must be a Solver"):
        sample(velocity_fn, torch.zeros(1, 2), sigmas, solver="euler")
    with pytest.raises(TypeError, match=r"sigmas must be a torch\.Tensor"):
        sample_euler(velocity_fn, torch.zeros(1, 2), [1.0, 0.0])
