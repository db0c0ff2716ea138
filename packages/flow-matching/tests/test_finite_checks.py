"""Finiteness checks of the solvers' loop state (issue 14): the initial state and every velocity."""

from __future__ import annotations

import pytest
import torch

from skyreels_flow_matching import (
    FiniteChecks,
    NonFiniteInputError,
    Solver,
    finite_checks,
    sample,
    sample_euler,
)

SIGMAS = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])


def _velocity_failing_at(step_sigma: float):
    def model_fn(x, sigma):
        u = -x
        if float(sigma[0]) == step_sigma:
            u = u.clone()
            u[0, 1] = float("nan")
        return u

    return model_fn


@pytest.mark.parametrize("solver", list(Solver))
def test_nan_velocity_mid_loop_raises_naming_the_step(solver):
    x = torch.randn(2, 3)
    with pytest.raises(NonFiniteInputError, match=r"model_fn output at sigma=0\.5: expected finite values"):
        sample(_velocity_failing_at(0.5), x, SIGMAS, solver=solver)


def test_nonfinite_initial_state_raises_naming_the_leaf():
    x = torch.randn(2, 3)
    x[1, 2] = float("inf")
    with pytest.raises(NonFiniteInputError, match=r"^x: expected finite values, got 0 NaN and 1 inf"):
        sample_euler(lambda x, s: -x, x, SIGMAS)
    pair = (torch.randn(2, 3), torch.full((2, 4), float("nan")))
    with pytest.raises(NonFiniteInputError, match=r"^x\[1\]"):
        sample_euler(lambda x, s: tuple(-t for t in x), pair, SIGMAS)


def test_finite_run_is_unchanged_and_off_lets_nan_through():
    x = torch.randn(2, 3)
    # u = -x is the velocity of x0 = 0 ... Euler's exact answer: x * prod(1 - dt) with dt < 0.
    expected = x.clone()
    for a, b in zip(SIGMAS[:-1].tolist(), SIGMAS[1:].tolist(), strict=True):
        expected = expected + (b - a) * -expected
    torch.testing.assert_close(sample_euler(lambda x, s: -x, x, SIGMAS), expected)
    with finite_checks(FiniteChecks.OFF):
        out = sample_euler(_velocity_failing_at(0.5), x, SIGMAS)
    assert torch.isnan(out).any()


def test_meta_and_fake_tensors_are_not_read():
    # Shape planning and FLOP counting run on meta / fake tensors, which hold no values to check.
    from torch._subclasses.fake_tensor import FakeTensorMode

    from skyreels_flow_matching import FiniteChecks as Mode
    from skyreels_flow_matching import check_finite as check
    from skyreels_flow_matching import finite_checks as mode_block

    with mode_block(Mode.ALWAYS):
        check(torch.empty(4, device="meta"), "meta")
        with FakeTensorMode() as fake_mode:
            check(fake_mode.from_tensor(torch.full((4,), float("nan"))), "fake")
        with pytest.raises(ValueError, match="real"):
            check(torch.full((4,), float("nan")), "real")
