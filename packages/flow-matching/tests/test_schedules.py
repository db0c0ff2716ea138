"""Inference σ grids: the shift-once form and bit-exact parity with diffusers' flow-match Euler grid."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from skyreels_flow_matching import ScheduleForm, flow_sigmas, shift_sigmas


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
@pytest.mark.parametrize("num_steps", [1, 2, 10, 30, 50])
def test_diffusers_form_is_bit_exact(shift, num_steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(num_steps)
    ours = flow_sigmas(num_steps, shift=shift, form=ScheduleForm.DIFFUSERS)
    assert ours.dtype == scheduler.sigmas.dtype
    assert torch.equal(ours, scheduler.sigmas)
    # the model's timestep is 1000σ, as diffusers' `timesteps`
    assert torch.equal(ours[:-1] * 1000, scheduler.timesteps)


def test_diffusers_dynamic_shift_shifts_only_once():
    """``use_dynamic_shifting``: the table is not pre-shifted, one exp(mu) shift of linspace(1, 1e-3, N)."""
    mu = 0.8
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    scheduler.set_timesteps(20, mu=mu)
    single = shift_sigmas(torch.linspace(1.0, 1e-3, 20, dtype=torch.float64), math.exp(mu)).float()
    torch.testing.assert_close(scheduler.sigmas[:-1], single, rtol=0, atol=1e-6)
    double = flow_sigmas(20, shift=math.exp(mu), form=ScheduleForm.DIFFUSERS)
    assert not torch.allclose(double, scheduler.sigmas, atol=1e-3)


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
def test_shift_once_values(shift):
    sigmas = flow_sigmas(10, shift=shift)
    uniform = torch.arange(10, -1, -1, dtype=torch.float64) / 10
    expected = (shift * uniform / (1 + (shift - 1) * uniform)).float()
    torch.testing.assert_close(sigmas, expected, rtol=0, atol=1e-7)
    assert sigmas[0] == 1.0
    assert sigmas[-1] == 0.0
    assert sigmas.shape == (11,)
    assert bool((sigmas[1:] < sigmas[:-1]).all())


@pytest.mark.parametrize("shift", [3.0, 7.0])
def test_the_two_forms_differ_by_the_double_shift(shift):
    """diffusers shifts the table's end and then the interpolated grid again (FACTS.md)."""
    once = flow_sigmas(10, shift=shift)
    diffusers = flow_sigmas(10, shift=shift, form=ScheduleForm.DIFFUSERS)
    double_shifted_end = shift_sigmas(shift_sigmas(torch.tensor(1 / 1000, dtype=torch.float64), shift), shift)
    assert diffusers[-2].item() == pytest.approx(double_shifted_end.item(), rel=1e-6)
    assert once[-2].item() == pytest.approx(shift_sigmas(0.1, shift), rel=1e-6)
    assert abs(once[-2].item() - diffusers[-2].item()) > 0.1
    assert once[0] == diffusers[0] == 1.0
    assert once[-1] == diffusers[-1] == 0.0


def test_dtype_and_device():
    assert flow_sigmas(4, dtype=torch.float64).dtype == torch.float64
    assert flow_sigmas(4, device="cpu").device.type == "cpu"


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        flow_sigmas(0)
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        flow_sigmas(2.0)
    with pytest.raises(TypeError, match="form must be a ScheduleForm"):
        flow_sigmas(4, form="diffusers")
    with pytest.raises(ValueError, match="shift must be a positive float"):
        flow_sigmas(4, shift=0.0)
    with pytest.raises(ValueError, match="num_train_timesteps must be an int >= 1"):
        flow_sigmas(4, form=ScheduleForm.DIFFUSERS, num_train_timesteps=0)
