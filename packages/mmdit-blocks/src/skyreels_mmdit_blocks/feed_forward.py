"""Position-wise MLP used by every block: ``fc2(act(fc1(x)))``, and its hidden width."""

from __future__ import annotations

import enum
import math

import torch
from torch import nn

__all__ = ["Activation", "FeedForward", "mlp_hidden_dim"]


def mlp_hidden_dim(dim: int, mlp_ratio: float) -> int:
    """The MLP hidden width every block derives from ``mlp_ratio``: ``dim · mlp_ratio`` rounded to the
    nearest int (halves up).

    Rounding, not truncation: a checkpoint's ratio is read back as ``mlp_dim / dim``, and
    ``dim · (mlp_dim / dim)`` can land one ulp below ``mlp_dim`` (dim 176, MLP 240 -> 239.99...), which
    ``int()`` would floor to a width the checkpoint does not have. HunyuanVideo's 3072 · 4 = 12288 is
    unaffected.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim must be a positive int; got {dim!r}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be a positive number; got {mlp_ratio!r}")
    width = math.floor(dim * mlp_ratio + 0.5)
    if width < 1:
        raise ValueError(f"mlp_ratio {mlp_ratio!r} gives no MLP hidden unit for dim {dim} (width {width})")
    return width


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
