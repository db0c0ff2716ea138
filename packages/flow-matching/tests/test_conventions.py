"""The σ convention and its equivalence with the paper's t (section 3.1, eq. 6)."""

from __future__ import annotations

import pytest
import torch

from skyreels_flow_matching import (
    add_noise,
    broadcast_sigma,
    noise_from_velocity,
    paper_velocity_to_velocity,
    shift_sigmas,
    sigma_to_t,
    sigma_to_timestep,
    t_to_sigma,
    timestep_to_sigma,
    unshift_sigmas,
    velocity_target,
    velocity_to_paper_velocity,
    x0_from_velocity,
)


@pytest.fixture
def tiny_batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    return x0, noise, sigma


def test_sigma_t_values_and_round_trip():
    assert sigma_to_t(0.25) == 0.75
    assert t_to_sigma(0.75) == 0.25
    sigma = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(t_to_sigma(sigma_to_t(sigma)), sigma, rtol=0, atol=1e-15)
    torch.testing.assert_close(sigma_to_t(t_to_sigma(sigma)), sigma, rtol=0, atol=1e-15)
    torch.testing.assert_close(sigma_to_t(sigma), sigma.flip(0), rtol=0, atol=1e-15)
    # σ = 1 is noise; the paper's t = 1 is data.
    assert sigma_to_t(1.0) == 0.0


def test_timestep_is_1000_sigma_and_round_trips():
    assert sigma_to_timestep(0.5) == 500.0
    assert sigma_to_timestep(0.5, num_train_timesteps=100) == 50.0
    sigma = torch.rand(7, dtype=torch.float64)
    torch.testing.assert_close(timestep_to_sigma(sigma_to_timestep(sigma)), sigma, rtol=0, atol=1e-15)


def test_noising_matches_the_paper(tiny_batch):
    """x_σ = (1-σ)x0 + σε equals the paper's z_t = t z0 + (1-t)ε at t = 1 - σ, row by row."""
    x0, noise, sigma = tiny_batch
    x_sigma = add_noise(x0, noise, sigma)
    t = sigma_to_t(sigma).view(3, 1, 1)
    torch.testing.assert_close(x_sigma, t * x0 + (1 - t) * noise, rtol=0, atol=1e-15)
    assert torch.equal(x_sigma[0], x0[0])  # σ = 0: data
    assert torch.equal(x_sigma[2], noise[2])  # σ = 1: noise


def test_velocity_is_d_x_d_sigma_and_minus_the_paper_target(tiny_batch):
    x0, noise, _ = tiny_batch
    sigma = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    x_sigma = add_noise(x0, noise, sigma)
    (grad,) = torch.autograd.grad(x_sigma.sum(), sigma)
    u = velocity_target(x0, noise)
    torch.testing.assert_close(grad, u.sum(dim=(1, 2)))
    assert torch.equal(velocity_to_paper_velocity(u), x0 - noise)  # the paper's z0 - ε
    assert torch.equal(paper_velocity_to_velocity(x0 - noise), u)


def test_paper_loss_equals_ours(tiny_batch):
    """||v_θ - (z0 - ε)||² with v_θ = -u_θ is the same number as ||u_θ - (ε - x0)||²."""
    x0, noise, _ = tiny_batch
    u_pred = torch.randn_like(x0)
    ours = (u_pred - velocity_target(x0, noise)).square().mean()
    paper = (velocity_to_paper_velocity(u_pred) - (x0 - noise)).square().mean()
    torch.testing.assert_close(ours, paper, rtol=0, atol=1e-15)


def test_x0_and_noise_recovery_from_exact_velocity(tiny_batch):
    x0, noise, sigma = tiny_batch
    x_sigma = add_noise(x0, noise, sigma)
    u = velocity_target(x0, noise)
    torch.testing.assert_close(x0_from_velocity(x_sigma, u, sigma), x0, rtol=0, atol=1e-14)
    torch.testing.assert_close(noise_from_velocity(x_sigma, u, sigma), noise, rtol=0, atol=1e-14)
    # scalar σ works the same
    x_half = add_noise(x0, noise, 0.5)
    torch.testing.assert_close(x0_from_velocity(x_half, u, 0.5), x0, rtol=0, atol=1e-14)


def test_shift_values_endpoints_and_inverse():
    assert shift_sigmas(0.5, 3.0) == pytest.approx(0.75)
    assert shift_sigmas(0.25, 7.0) == pytest.approx(7 * 0.25 / (1 + 6 * 0.25))
    sigma = torch.linspace(0, 1, 101, dtype=torch.float64)
    for s in (0.5, 1.0, 3.0, 7.0):
        shifted = shift_sigmas(sigma, s)
        assert shifted[0] == 0.0
        assert shifted[-1] == 1.0
        assert bool((shifted[1:] > shifted[:-1]).all())
        torch.testing.assert_close(unshift_sigmas(shifted, s), sigma, rtol=0, atol=1e-15)
    assert torch.equal(shift_sigmas(sigma, 1.0), sigma)
    # s > 1 moves every interior σ towards noise
    assert bool((shift_sigmas(sigma[1:-1], 3.0) > sigma[1:-1]).all())


@pytest.mark.parametrize("shift", [0.0, -1.0, float("inf"), float("nan"), True, "3"])
def test_bad_shift_raises(shift):
    with pytest.raises(ValueError, match="shift must be"):
        shift_sigmas(0.5, shift)


def test_bad_inputs_raise():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \[B\] = \[2\]"):
        add_noise(x, x, torch.zeros(3))
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        add_noise(x, torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        velocity_target(x, torch.zeros(1, 3))
    with pytest.raises(TypeError, match=r"sigma must be a float or a torch\.Tensor"):
        broadcast_sigma("0.5", x)
    assert broadcast_sigma(torch.ones(2), torch.zeros(2, 3, 4)).shape == (2, 1, 1)
