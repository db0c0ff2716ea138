"""Training noise levels: σ distributions and the (optionally resolution-dependent) time shift.

The paper samples ``t ~ U(0, 1)`` (section 3.1), i.e. ``σ = 1 - t ~ U(0, 1)``. Video models in the
same family train with distributions that put more weight on mid/high noise; we offer the three in
common use, each followed by an optional shift ``σ' = s·σ / (1 + (s - 1)·σ)``:

- ``uniform``: ``σ ~ U(0, 1)`` (the paper).
- ``logit_normal``: ``σ = sigmoid(n), n ~ N(m, s²)`` (SD3, Esser et al. 2024, section 3.1).
- ``mode``: ``σ = 1 - u - c·(cos²(π u / 2) - 1 + u), u ~ U(0, 1)`` (SD3 "mode sampling with
  heavy tails", scale c in [-1, 2/(π-2)] so that the map stays monotone).

The shift is fixed or grows with the number of tokens: ``s(n) = s_base·sqrt(n / n_base)`` (SD3
section 5.3.2: a resolution with m times the pixels needs the timesteps shifted by sqrt(m)). With
Wan's s = 3 at 480p x 81 frames (32760 tokens) this rule gives 4.6 at 720p, close to Wan's 5.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from skyreels_flow_matching.conventions import shift_sigmas

__all__ = [
    "ShiftConfig",
    "ShiftRule",
    "TimestepDistribution",
    "TimestepSamplerConfig",
    "mode_sampling_map",
    "resolve_shift",
    "sample_training_sigmas",
]

_MODE_SCALE_MAX = 2.0 / (math.pi - 2.0)


class ShiftRule(str, enum.Enum):
    """How the time shift s is chosen."""

    FIXED = "fixed"  # s = ShiftConfig.shift
    TOKEN_SQRT = "token_sqrt"  # s = ShiftConfig.shift · sqrt(num_tokens / base_num_tokens)


@dataclass(frozen=True, kw_only=True)
class ShiftConfig:
    """Time shift for training samplers and inference schedules.

    Attributes:
        rule: fixed shift, or one that grows with the square root of the token count.
        shift: the shift (``FIXED``) or the shift at ``base_num_tokens`` (``TOKEN_SQRT``); 1 = no shift.
        base_num_tokens: token count at which ``TOKEN_SQRT`` gives ``shift``. The default is
            480x832 x 81 frames after a 4x8x8 VAE and a 1x2x2 patch (21·30·52).
    """

    rule: ShiftRule = ShiftRule.FIXED
    shift: float = 1.0
    base_num_tokens: int = 32760

    def __post_init__(self) -> None:
        if not isinstance(self.rule, ShiftRule):
            raise TypeError(f"rule must be a ShiftRule, got {self.rule!r}")
        if not (isinstance(self.shift, (int, float)) and 0 < self.shift < math.inf):
            raise ValueError(f"shift must be a positive finite float, got {self.shift!r}")
        if isinstance(self.base_num_tokens, bool) or not isinstance(self.base_num_tokens, int):
            raise TypeError(f"base_num_tokens must be an int, got {type(self.base_num_tokens).__name__}")
        if self.base_num_tokens <= 0:
            raise ValueError(f"base_num_tokens must be positive, got {self.base_num_tokens}")


def resolve_shift(config: ShiftConfig, num_tokens: int | None = None) -> float:
    """The shift s for a sequence of ``num_tokens`` tokens (needed only by ``TOKEN_SQRT``)."""
    if config.rule is ShiftRule.FIXED:
        return float(config.shift)
    if num_tokens is None or isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
        raise ValueError(
            f"num_tokens must be a positive int for shift rule {config.rule.value!r}, got {num_tokens!r}"
        )
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    return float(config.shift) * math.sqrt(num_tokens / config.base_num_tokens)


class TimestepDistribution(str, enum.Enum):
    """Distribution of the unshifted training σ."""

    UNIFORM = "uniform"
    LOGIT_NORMAL = "logit_normal"
    MODE = "mode"


@dataclass(frozen=True, kw_only=True)
class TimestepSamplerConfig:
    """Training σ sampler. The default is the paper's ``t ~ U(0, 1)`` without shift.

    Attributes:
        distribution: which distribution σ is drawn from before the shift.
        logit_mean, logit_std: m and s of ``sigmoid(N(m, s²))`` (``LOGIT_NORMAL`` only).
        mode_scale: c of mode sampling (``MODE`` only), in ``[-1, 2/(π-2)]``; 0 is uniform.
        shift: time shift applied after drawing.
    """

    distribution: TimestepDistribution = TimestepDistribution.UNIFORM
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    shift: ShiftConfig = field(default_factory=ShiftConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.distribution, TimestepDistribution):
            raise TypeError(f"distribution must be a TimestepDistribution, got {self.distribution!r}")
        if not (isinstance(self.logit_std, (int, float)) and 0 < self.logit_std < math.inf):
            raise ValueError(f"logit_std must be a positive finite float, got {self.logit_std!r}")
        if not (isinstance(self.logit_mean, (int, float)) and math.isfinite(self.logit_mean)):
            raise ValueError(f"logit_mean must be a finite float, got {self.logit_mean!r}")
        if not (isinstance(self.mode_scale, (int, float)) and -1.0 <= self.mode_scale <= _MODE_SCALE_MAX):
            raise ValueError(
                f"mode_scale must lie in [-1, 2/(pi-2) = {_MODE_SCALE_MAX:.4f}] so that mode sampling "
                f"stays monotone, got {self.mode_scale!r}"
            )
        if not isinstance(self.shift, ShiftConfig):
            raise TypeError(f"shift must be a ShiftConfig, got {type(self.shift).__name__}")


def mode_sampling_map(u: Tensor, scale: float) -> Tensor:
    """SD3 mode sampling ``f(u) = 1 - u - c·(cos²(π u / 2) - 1 + u)``, decreasing in u for valid c."""
    return 1.0 - u - scale * (torch.cos(0.5 * math.pi * u) ** 2 - 1.0 + u)


def sample_training_sigmas(
    batch_size: int,
    config: TimestepSamplerConfig,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    num_tokens: int | None = None,
) -> Tensor:
    """Draw one training noise level per sample.

    Random numbers are drawn on the generator's device (CPU when no generator is given) in float32
    and then moved to ``device``, so a seed gives the same σ on every device.

    Args:
        batch_size: B.
        config: distribution and shift.
        generator: source of randomness; pass one for reproducible draws.
        device: where the result lives (default: the generator's device, else CPU).
        num_tokens: sequence length, required by ``ShiftRule.TOKEN_SQRT``.
    Returns:
        σ ``[B]`` float32 in [0, 1].
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(config, TimestepSamplerConfig):
        raise TypeError(f"config must be a TimestepSamplerConfig, got {type(config).__name__}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    shift = resolve_shift(config.shift, num_tokens)

    if config.distribution is TimestepDistribution.UNIFORM:
        sigma = torch.rand(batch_size, generator=generator, device=draw_device)
    elif config.distribution is TimestepDistribution.LOGIT_NORMAL:
        normal = torch.randn(batch_size, generator=generator, device=draw_device)
        sigma = torch.sigmoid(config.logit_mean + config.logit_std * normal)
    else:
        u = torch.rand(batch_size, generator=generator, device=draw_device)
        sigma = mode_sampling_map(u, config.mode_scale)
    if shift != 1.0:
        sigma = shift_sigmas(sigma, shift)
    # Rounding in the mode map can leave the unit interval by an ulp.
    sigma = sigma.clamp(0.0, 1.0)
    return sigma.to(device) if device is not None else sigma
