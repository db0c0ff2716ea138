"""Snake activation with per-channel log-scale frequency and magnitude (BigVGAN / Oobleck "SnakeBeta").

``snake(x) = x + sin(alpha * x)^2 / beta`` with ``alpha = exp(log_alpha)``, ``beta = exp(log_beta)``
learned per channel. A periodic inductive bias helps waveform models extrapolate oscillations
(Ziyin et al. 2020). DAC's single-parameter Snake is the special case ``beta = alpha``; we keep
the two-parameter form because Stable Audio Open's Oobleck weights use it and we import them
(``oobleck.py``). Parameters are stored in log scale and initialised to 0 (alpha = beta = 1), the
same storage as Oobleck, so imported tensors need no transformation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Snake", "snake_reference"]

# Oobleck adds this to beta before dividing; kept identical so imported weights behave the same.
_BETA_EPS = 1e-9


def snake_reference(x_BCT: Tensor, log_alpha_C: Tensor, log_beta_C: Tensor) -> Tensor:
    """Plain fp32 Snake: ``x + sin(exp(log_alpha) x)^2 / (exp(log_beta) + 1e-9)``, per channel.

    x_BCT: [B, C, T]; log_alpha_C, log_beta_C: [C]. Returns [B, C, T] in float32.
    """
    x = x_BCT.float()
    alpha = log_alpha_C.float().exp()[None, :, None]
    beta = log_beta_C.float().exp()[None, :, None]
    return x + torch.sin(alpha * x) ** 2 / (beta + _BETA_EPS)


class Snake(nn.Module):
    """Per-channel Snake activation on ``[B, C, T]`` tensors.

    Attributes ``alpha`` and ``beta`` hold ``log(alpha)`` and ``log(beta)``, shape ``[C]`` (the
    names match Oobleck's state dict).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
            raise ValueError(f"channels: expected a positive int, got {channels!r}")
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x_BCT: Tensor) -> Tensor:
        if x_BCT.ndim != 3 or x_BCT.shape[1] != self.alpha.shape[0]:
            raise ValueError(f"x: expected [B, {self.alpha.shape[0]}, T], got shape {tuple(x_BCT.shape)}")
        alpha = self.alpha.exp().to(x_BCT.dtype)[None, :, None]
        inv_beta = (self.beta.exp() + _BETA_EPS).reciprocal().to(x_BCT.dtype)[None, :, None]
        return x_BCT + inv_beta * torch.sin(alpha * x_BCT).pow(2)

    def extra_repr(self) -> str:
        return f"channels={self.alpha.shape[0]}"
