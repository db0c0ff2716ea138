"""Plain fp64/complex reference implementations that the tests compare the fast paths against.

Written for clarity, not speed: per-axis loops in float64 and complex multiplication.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skyreels_av_rope.rotary import RotaryConfig

__all__ = ["apply_rotary_reference", "rotary_tables_reference"]


def rotary_tables_reference(positions: Tensor, config: RotaryConfig) -> tuple[Tensor, Tensor]:
    """float64 cos/sin ``[.., L, D // 2]`` for ``[.., L, A]`` positions, one channel pair at a time."""
    positions = positions.to(torch.float64)
    columns = []
    for axis, axis_dim in enumerate(config.axes_dims):
        for i in range(axis_dim // 2):
            frequency = config.theta ** (-2.0 * i / axis_dim)
            columns.append(positions[..., axis] * frequency)
    angle = torch.stack(columns, dim=-1)
    return angle.cos(), angle.sin()


def apply_rotary_reference(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding as complex multiplication ``(x_{2j} + i x_{2j+1}) * (cos_j + i sin_j)``.

    Args:
        x: ``[B, L, H, D]``; cos, sin: ``[L, D // 2]`` or ``[B, L, D // 2]``.

    Returns:
        ``[B, L, H, D]`` in the promoted dtype of the inputs and float32 (no cast back).
    """
    dtype = torch.promote_types(torch.promote_types(x.dtype, cos.dtype), torch.float32)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    z = torch.view_as_complex(x.to(dtype).reshape(*x.shape[:-1], -1, 2).contiguous())
    rotation = torch.complex(cos.to(dtype), sin.to(dtype)).to(complex_dtype).unsqueeze(-2)
    return torch.view_as_real(z * rotation).flatten(-2)
