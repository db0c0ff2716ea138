"""Plain float64 references for the tests: a flow with a known solution, the loss, guidance.

**Gaussian data.** For ``x0 ~ N(μ, s²I)`` and ``x_σ = (1-σ)·x0 + σ·ε`` the marginal is Gaussian,
``x_σ ~ N((1-σ)·μ, v(σ)·I)`` with ``v(σ) = (1-σ)²s² + σ²``, and ``(ε, x0, x_σ)`` are jointly
Gaussian with ``Cov(ε, x_σ) = σ`` and ``Cov(x0, x_σ) = (1-σ)s²``. Hence the exact flow-matching
velocity (the minimiser of eq. 6) is affine in ``x_σ``:

    u(x, σ) = E[ε - x0 | x_σ = x] = (σ - (1-σ)s²) / v(σ) · (x - (1-σ)μ) - μ.

Since ``v'(σ)/2 = σ - (1-σ)s²``, the probability-flow ODE ``dx/dσ = u`` keeps the standardised
offset constant and its solution from σ_a to σ_b is

    x(σ_b) = (1-σ_b)·μ + sqrt(v(σ_b)/v(σ_a)) · (x(σ_a) - (1-σ_a)·μ),

in particular ``x(0) = μ + s·x(1)``: noise maps to data exactly, which solvers are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from skyreels_flow_matching.conventions import broadcast_sigma

__all__ = ["GaussianFlowProblem", "reference_guided_velocity", "reference_masked_mse"]


@dataclass(frozen=True, kw_only=True)
class GaussianFlowProblem:
    """Data ``N(mean, std²·I)`` with its exact velocity field and ODE solution.

    Attributes:
        mean: μ, broadcastable against a state ``[B, ...]`` without its batch dim (e.g. ``[C, L]``).
        std: s > 0.
    """

    mean: Tensor
    std: float

    def __post_init__(self) -> None:
        if not isinstance(self.mean, Tensor):
            raise TypeError(f"mean must be a torch.Tensor, got {type(self.mean).__name__}")
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std!r}")

    def marginal_variance(self, sigma: float | Tensor) -> float | Tensor:
        """``v(σ) = (1-σ)²s² + σ²``."""
        return (1.0 - sigma) ** 2 * self.std**2 + sigma**2

    def velocity(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Exact ``u(x, σ)`` for ``x [B, ...]`` and σ a float or ``[B]``; computed in float64."""
        s = broadcast_sigma(sigma, x)
        s = s.to(torch.float64) if isinstance(s, Tensor) else s
        mean = self.mean.to(device=x.device, dtype=torch.float64)
        offset = x.to(torch.float64) - (1.0 - s) * mean
        u = (s - (1.0 - s) * self.std**2) / self.marginal_variance(s) * offset - mean
        return u.to(x.dtype)

    def solution(self, x_start: Tensor, sigma_start: float, sigma_end: float) -> Tensor:
        """The exact ODE solution at ``sigma_end`` from ``x_start`` at ``sigma_start``; float64."""
        mean = self.mean.to(device=x_start.device, dtype=torch.float64)
        scale = (self.marginal_variance(sigma_end) / self.marginal_variance(sigma_start)) ** 0.5
        return (1.0 - sigma_end) * mean + scale * (x_start.to(torch.float64) - (1.0 - sigma_start) * mean)


def reference_masked_mse(prediction: Tensor, target: Tensor, loss_mask: Tensor | None) -> Tensor:
    """Masked mean squared error by the definition: expand the mask, sum, divide; float64."""
    error = (prediction.to(torch.float64) - target.to(torch.float64)) ** 2
    if loss_mask is None:
        return error.sum() / error.numel()
    mask = loss_mask.to(torch.float64).expand_as(error)
    count = mask.sum()
    return (error * mask).sum() / count if count > 0 else count


def reference_guided_velocity(
    conditional: Tensor, unconditional: Tensor, scale: float, rescale: float
) -> Tensor:
    """CFG then Lin et al. (2023, eq. 15-16) std rescale, sample by sample in float64.

    ``g = n + w·(c - n)``; ``g_r = g·std(c)/std(g)``; result ``φ·g_r + (1-φ)·g`` (std over all
    non-batch elements of one sample).
    """
    outputs = []
    for c, n in zip(conditional.to(torch.float64), unconditional.to(torch.float64)):
        guided = n + scale * (c - n)
        std_c = ((c - c.mean()) ** 2).sum().div(c.numel() - 1).sqrt()
        std_g = ((guided - guided.mean()) ** 2).sum().div(guided.numel() - 1).sqrt()
        outputs.append(rescale * guided * (std_c / std_g) + (1.0 - rescale) * guided)
    return torch.stack(outputs)
