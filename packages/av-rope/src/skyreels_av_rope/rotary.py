"""Multi-axis rotary position embedding: tables from real-valued positions, and their application.

Shape legend: B batch, L tokens, H heads, D head dim, A number of position axes.

One code path serves every position the model uses (paper sections 3.1 and 3.3): integer video grids,
audio positions scaled onto the video's time axis, negative temporal offsets for references and
fractional spatial positions for high-resolution keyframes. Positions are real numbers; nothing here
assumes they are integers.

Channel layout (ARCHITECTURE.md section 3, HunyuanVideo): the head dim is split into consecutive
slices, one per axis, in axis order (t first for video). Axis ``a`` with ``d_a`` channels owns
``d_a // 2`` interleaved channel pairs ``(2i, 2i+1)``, rotated by the angle ``p_a * theta**(-2i/d_a)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["HUNYUAN_VIDEO_ROPE", "RotaryConfig", "RotaryEmbedding", "apply_rotary", "axis_frequencies"]


@dataclass(frozen=True, kw_only=True)
class RotaryConfig:
    """How the head dim is split between position axes, and the RoPE base.

    Attributes:
        axes_dims: channels per axis, in axis order; each even and positive. Their sum is the head
            dim the tables cover, e.g. ``(16, 56, 56)`` for video ``(t, h, w)`` with head dim 128,
            ``(128,)`` for a time-only audio RoPE.
        theta: RoPE base; HunyuanVideo uses 256.
    """

    axes_dims: tuple[int, ...]
    theta: float = 256.0

    def __post_init__(self) -> None:
        dims = self.axes_dims
        if not isinstance(dims, tuple) or len(dims) == 0:
            raise TypeError(f"axes_dims: expected a non-empty tuple of ints, got {dims!r}")
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, int) or d <= 0 or d % 2 != 0:
                raise ValueError(f"axes_dims: expected positive even ints, got {dims!r}")
        if not (isinstance(self.theta, (int, float)) and self.theta > 0):
            raise ValueError(f"theta: expected a positive number, got {self.theta!r}")

    @property
    def head_dim(self) -> int:
        """Channels covered by the tables: ``sum(axes_dims)``."""
        return sum(self.axes_dims)

    @property
    def num_axes(self) -> int:
        """Number of position coordinates per token (A)."""
        return len(self.axes_dims)


HUNYUAN_VIDEO_ROPE = RotaryConfig(axes_dims=(16, 56, 56), theta=256.0)
"""HunyuanVideo-13B's split of head dim 128 into (t, h, w) = (16, 56, 56), theta 256."""


def axis_frequencies(axis_dim: int, theta: float, *, device: torch.device | str | None = None) -> Tensor:
    """Angular frequencies of one axis, ``theta ** (-2i / axis_dim)`` for ``i < axis_dim // 2``.

    Returns:
        float32 ``[axis_dim // 2]``, decreasing from 1.
    """
    exponents = torch.arange(0, axis_dim, 2, dtype=torch.float32, device=device) / axis_dim
    return 1.0 / (theta**exponents)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for tokens at real-valued multi-axis positions. Holds no parameters or buffers.

    Tables are recomputed on each call on the positions' device, always in float32 (so that
    ``module.to(torch.bfloat16)`` cannot degrade them).

    Example:
        >>> rope = RotaryEmbedding(HUNYUAN_VIDEO_ROPE)
        >>> cos, sin = rope(video_grid_positions(2, 3, 4))  # [24, 64] each
    """

    def __init__(self, config: RotaryConfig) -> None:
        super().__init__()
        if not isinstance(config, RotaryConfig):
            raise TypeError(f"config: expected a RotaryConfig, got {type(config).__name__}")
        self.config = config

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Rotary tables for ``positions``.

        Args:
            positions: ``[L, A]`` or ``[B, L, A]`` real-valued coordinates, A = ``config.num_axes``,
                in the axis order of ``config.axes_dims``. Integer tensors are converted to float32.

        Returns:
            ``(cos, sin)``, float32, ``[L, D // 2]`` or ``[B, L, D // 2]`` with D = ``config.head_dim``;
            column ``j`` belongs to channel pair ``(2j, 2j+1)`` of the head.
        """
        if not isinstance(positions, Tensor):
            raise TypeError(f"positions: expected a torch.Tensor, got {type(positions).__name__}")
        if positions.ndim not in (2, 3) or positions.shape[-1] != self.config.num_axes:
            raise ValueError(
                f"positions: expected shape [L, {self.config.num_axes}] or [B, L, {self.config.num_axes}] "
                f"for axes_dims={self.config.axes_dims}, got {tuple(positions.shape)}"
            )
        if positions.is_complex() or positions.dtype == torch.bool:
            raise TypeError(f"positions: expected a real float or integer tensor, got {positions.dtype}")
        positions = positions.to(torch.float32)
        angles = []
        for axis, axis_dim in enumerate(self.config.axes_dims):
            freqs = axis_frequencies(axis_dim, self.config.theta, device=positions.device)
            angles.append(positions[..., axis, None] * freqs)  # [..., L, axis_dim // 2]
        angle = torch.cat(angles, dim=-1)
        return angle.cos(), angle.sin()

    def extra_repr(self) -> str:
        return f"axes_dims={self.config.axes_dims}, theta={self.config.theta}"


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved channel pairs of ``x`` by the angles whose cos/sin are given.

    Pair ``(x0, x1) = (x[..., 2j], x[..., 2j+1])`` becomes ``(x0 cos_j - x1 sin_j, x1 cos_j + x0 sin_j)``:
    multiplication of ``x0 + i x1`` by ``exp(i angle_j)``. Computed in float32 (float64 if ``x`` or
    the tables are float64), returned in ``x.dtype``.

    Args:
        x: ``[B, L, H, D]`` queries or keys, D even.
        cos, sin: ``[L, D // 2]`` (shared by the batch) or ``[B, L, D // 2]``, e.g. from
            :class:`RotaryEmbedding`.

    Returns:
        ``[B, L, H, D]`` in ``x.dtype``.
    """
    for name, t in (("x", x), ("cos", cos), ("sin", sin)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if x.ndim != 4 or x.shape[-1] % 2 != 0:
        raise ValueError(f"x: expected [B, L, H, D] with even D, got {tuple(x.shape)}")
    batch, length, _, head_dim = x.shape
    if cos.shape != sin.shape:
        raise ValueError(f"cos, sin: expected equal shapes, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    allowed = ((length, head_dim // 2), (batch, length, head_dim // 2))
    if tuple(cos.shape) not in allowed:
        raise ValueError(
            f"cos/sin: expected [{length}, {head_dim // 2}] or [{batch}, {length}, {head_dim // 2}] "
            f"for x of shape {tuple(x.shape)}, got {tuple(cos.shape)}"
        )
    compute_dtype = torch.promote_types(torch.promote_types(x.dtype, cos.dtype), torch.float32)
    # Tables broadcast over heads: [.., L, 1, D/2].
    cos = cos.to(compute_dtype).unsqueeze(-2)
    sin = sin.to(compute_dtype).unsqueeze(-2)
    pairs = x.to(compute_dtype).unflatten(-1, (head_dim // 2, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)
    return rotated.flatten(-2).to(x.dtype)
