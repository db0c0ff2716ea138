"""Training σ samplers: statistics against closed-form quantiles, shift rules, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from skyreels_flow_matching import (
    ShiftConfig,
    ShiftRule,
    TimestepDistribution,
    TimestepSamplerConfig,
    mode_sampling_map,
    resolve_shift,
    sample_training_sigmas,
    shift_sigmas,
)

N = 200_000
QUANTILES = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)


def _draw(config: TimestepSamplerConfig, seed: int = 0, num_tokens: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sample_training_sigmas(N, config, generator=g, num_tokens=num_tokens).to(torch.float64)


def _expected_quantiles(distribution: TimestepDistribution, config: TimestepSamplerConfig) -> torch.Tensor:
    if distribution is TimestepDistribution.UNIFORM:
        return QUANTILES.clone()
    if distribution is TimestepDistribution.LOGIT_NORMAL:
        return torch.sigmoid(config.logit_mean + config.logit_std * torch.special.ndtri(QUANTILES))
    # mode sampling is decreasing in u, so the q-quantile of σ is f(1 - q)
    return mode_sampling_map(1.0 - QUANTILES, config.mode_scale)


@pytest.mark.parametrize(
    "config",
    [
        TimestepSamplerConfig(),
        TimestepSamplerConfig(distribution=TimestepDistribution.LOGIT_NORMAL, logit_mean=0.5, logit_std=0.8),
        TimestepSamplerConfig(distribution=TimestepDistribution.MODE, mode_scale=1.29),
        TimestepSamplerConfig(distribution=TimestepDistribution.MODE, mode_scale=-0.5),
    ],
    ids=["uniform", "logit_normal", "mode_1.29", "mode_-0.5"],
)
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_quantiles_match_closed_form(config, shift):
    config = TimestepSamplerConfig(
        distribution=config.distribution,
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        mode_scale=config.mode_scale,
        shift=ShiftConfig(shift=shift),
    )
    sigma = _draw(config)
    assert sigma.dtype == torch.float64
    assert sigma.shape == (N,)
    assert float(sigma.min()) >= 0.0
    assert float(sigma.max()) <= 1.0
    expected = shift_sigmas(_expected_quantiles(config.distribution, config), shift)
    # the standard error of a quantile at n = 2e5 is below 2e-3 for these densities
    torch.testing.assert_close(torch.quantile(sigma, QUANTILES), expected, rtol=0, atol=4e-3)


def test_unshifted_means():
    assert float(_draw(TimestepSamplerConfig()).mean()) == pytest.approx(0.5, abs=3e-3)
    # E[f_mode(u)] = 1/2 for every scale (the cos² term integrates to 1/2)
    mode = TimestepSamplerConfig(distribution=TimestepDistribution.MODE, mode_scale=1.29)
    assert float(_draw(mode).mean()) == pytest.approx(0.5, abs=3e-3)
    logit = TimestepSamplerConfig(distribution=TimestepDistribution.LOGIT_NORMAL, logit_mean=0.0)
    assert float(_draw(logit).mean()) == pytest.approx(0.5, abs=3e-3)
    assert float(_draw(logit).median()) == pytest.approx(0.5, abs=4e-3)


def test_shift_moves_mass_towards_noise():
    plain = _draw(TimestepSamplerConfig())
    shifted = _draw(TimestepSamplerConfig(shift=ShiftConfig(shift=3.0)))
    # same seed: the shifted draw is exactly the shift of the plain one (float32 arithmetic)
    torch.testing.assert_close(shifted, shift_sigmas(plain.float(), 3.0).double(), rtol=0, atol=1e-6)
    assert float(shifted.mean()) > float(plain.mean()) + 0.1


def test_token_sqrt_rule_values():
    rule = ShiftConfig(rule=ShiftRule.TOKEN_SQRT, shift=3.0, base_num_tokens=32760)
    assert resolve_shift(rule, 32760) == pytest.approx(3.0)
    assert resolve_shift(rule, 4 * 32760) == pytest.approx(6.0)
    assert resolve_shift(rule, 75600) == pytest.approx(3.0 * math.sqrt(75600 / 32760))  # 720p: ~4.56
    assert resolve_shift(ShiftConfig(shift=5.0), 123) == 5.0  # fixed ignores the token count
    assert resolve_shift(ShiftConfig(shift=5.0)) == 5.0


def test_token_sqrt_rule_applied_in_sampler():
    config = TimestepSamplerConfig(
        shift=ShiftConfig(rule=ShiftRule.TOKEN_SQRT, shift=2.0, base_num_tokens=100)
    )
    sigma = _draw(config, num_tokens=400)  # shift 4
    expected = shift_sigmas(QUANTILES, 4.0)
    torch.testing.assert_close(torch.quantile(sigma, QUANTILES), expected, rtol=0, atol=4e-3)


def test_deterministic_with_a_generator():
    config = TimestepSamplerConfig(distribution=TimestepDistribution.LOGIT_NORMAL)
    a = sample_training_sigmas(16, config, generator=torch.Generator().manual_seed(3))
    b = sample_training_sigmas(16, config, generator=torch.Generator().manual_seed(3))
    c = sample_training_sigmas(16, config, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.dtype == torch.float32
    assert a.device.type == "cpu"
    moved = sample_training_sigmas(16, config, generator=torch.Generator().manual_seed(3), device="cpu")
    assert torch.equal(moved, a)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode_scale": 2.0}, ValueError, "mode_scale must lie in"),
        ({"mode_scale": -1.5}, ValueError, "mode_scale must lie in"),
        ({"logit_std": 0.0}, ValueError, "logit_std must be"),
        ({"logit_mean": float("nan")}, ValueError, "logit_mean must be"),
        ({"distribution": "uniform"}, TypeError, "distribution must be a TimestepDistribution"),
        ({"shift": 3.0}, TypeError, "shift must be a ShiftConfig"),
    ],
)
def test_bad_sampler_config_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        TimestepSamplerConfig(**kwargs)


def test_bad_shift_config_and_calls_raise():
    with pytest.raises(ValueError, match="shift must be a positive finite float"):
        ShiftConfig(shift=0.0)
    with pytest.raises(ValueError, match="base_num_tokens must be positive"):
        ShiftConfig(base_num_tokens=0)
    with pytest.raises(TypeError, match="rule must be a ShiftRule"):
        ShiftConfig(rule="fixed")
    rule = ShiftConfig(rule=ShiftRule.TOKEN_SQRT)
    with pytest.raises(ValueError, match="num_tokens must be a positive int for shift rule 'token_sqrt'"):
        resolve_shift(rule)
    with pytest.raises(ValueError, match="num_tokens must be positive"):
        resolve_shift(rule, 0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        sample_training_sigmas(0, TimestepSamplerConfig())
    with pytest.raises(TypeError, match="config must be a TimestepSamplerConfig"):
        sample_training_sigmas(2, ShiftConfig())
