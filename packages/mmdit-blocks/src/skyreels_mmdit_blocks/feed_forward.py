"""Position-wise MLP used by every block: ``fc2(act(fc1(x)))``."""

from __future__ import annotations

import enum

import torch
from torch import nn

__all__ = ["Activation", "FeedForward"]


class Activation(enum.Enum):
    """Hidden activation of a ``FeedForward``."""

    GELU_TANH = "gelu_tanh"  # HunyuanVideo dual-/single-stream blocks
    SILU = "silu"  # HunyuanVideo text token refiner

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self is Activation.GELU_TANH:
            return nn.functional.gelu(x, approximate="tanh")
        return nn.functional.silu(x)


class FeedForward(nn.Module):
    """``[.., D] -> Linear(D, hidden) -> activation -> Linear(hidden, D) -> [.., D]`` (biases on)."""

    def __init__(self, dim: int, hidden_dim: int, *, activation: Activation) -> None:
        super().__init__()
        self.activation = activation
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))
