"""The Gaussian (KL) bottleneck: encoder output -> diagonal Gaussian posterior over latents.

The encoder emits ``2 * C`` channels, split into a mean and an unconstrained scale ``s``. Two
parameterisations of the standard deviation are selectable:

- ``"softplus"``: ``std = softplus(s) + 1e-4`` (Stable Audio Open's Oobleck; needed for its weights),
- ``"exp"``: ``s`` is a log-variance clamped to [-30, 20], ``std = exp(s / 2)`` (the image-LDM VAEs).

KL to ``N(0, I)`` per latent element: ``0.5 * (mean^2 + var - log var - 1)``; the objective averages
it over elements. Oobleck's training code sums ``mean^2 + var - log var - 1`` over the C channels
without the 0.5, so its weight ``w`` is our ``kl_weight = 2 * C * w`` (docs/decisions/0006).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DiagonalGaussian", "ScaleParameterization"]

ScaleParameterization = Literal["softplus", "exp"]

_SOFTPLUS_STD_FLOOR = 1e-4
_LOGVAR_RANGE = (-30.0, 20.0)


@dataclass(frozen=True)
class DiagonalGaussian:
    """A diagonal Gaussian over audio latents; ``mean`` and ``std`` are ``[B, C, L]``."""

    mean: Tensor
    std: Tensor

    @classmethod
    def from_encoder_output(
        cls, encoder_output_B2CL: Tensor, scale_parameterization: ScaleParameterization
    ) -> DiagonalGaussian:
        """Split ``[B, 2C, L]`` into mean and scale channels (mean first, as Oobleck) and map the scale."""
        if encoder_output_B2CL.ndim != 3 or encoder_output_B2CL.shape[1] % 2:
            raise ValueError(
                "encoder_output: expected [B, 2C, L] with an even channel count, "
                f"got shape {tuple(encoder_output_B2CL.shape)}"
            )
        mean, scale = encoder_output_B2CL.chunk(2, dim=1)
        if scale_parameterization == "softplus":
            std = F.softplus(scale) + _SOFTPLUS_STD_FLOOR
        elif scale_parameterization == "exp":
            std = torch.exp(0.5 * scale.clamp(*_LOGVAR_RANGE))
        else:
            raise ValueError(
                f"scale_parameterization: expected 'softplus' or 'exp', got {scale_parameterization!r}"
            )
        return cls(mean=mean, std=std)

    def mode(self) -> Tensor:
        """The mean, ``[B, C, L]`` (deterministic encoding)."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised sample ``mean + std * eps``, ``[B, C, L]``."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def kl_per_element(self) -> Tensor:
        """KL(q || N(0, I)) for each latent element, ``[B, C, L]``."""
        var = self.std.square()
        return 0.5 * (self.mean.square() + var - torch.log(var) - 1.0)
