"""Weight-normalised 1D convolutions, residual units and the strided encoder/decoder blocks.

The layout follows the waveform codecs that work best at 44.1 kHz (DAC; Stable Audio Open's
Oobleck): every block is three residual units with dilations 1, 3, 9 (kernel 7, so the receptive
field grows geometrically) around one strided convolution of kernel ``2 * stride``. Snake
activations precede every convolution. Shapes: ``[B, C, T]`` throughout.

Length bookkeeping (why strides must be even): a convolution with kernel ``2s``, stride ``s`` and
padding ``ceil(s / 2)`` maps ``T = n * s`` samples to exactly ``n`` frames when ``s`` is even, and
the transposed convolution with the same kernel, stride and padding maps ``n`` frames back to
``n * s`` samples. With an odd stride the transposed side would lose one sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from skyreels_audio_vae.snake import Snake

__all__ = [
    "DecoderBlock",
    "EncoderBlock",
    "ResidualUnit",
    "weight_normed_conv1d",
    "weight_normed_conv_transpose1d",
]

RESIDUAL_KERNEL_SIZE = 7


def weight_normed_conv1d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    padding: int = 0,
    bias: bool = True,
) -> nn.Conv1d:
    """``nn.Conv1d`` with weight normalisation over all dims except the output channel (dim 0)."""
    conv = nn.Conv1d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        dilation=dilation,
        padding=padding,
        bias=bias,
    )
    return weight_norm(conv, dim=0)


def weight_normed_conv_transpose1d(
    in_channels: int, out_channels: int, kernel_size: int, *, stride: int, padding: int
) -> nn.ConvTranspose1d:
    """``nn.ConvTranspose1d`` with weight normalisation over dim 0 of its ``[in, out, k]`` weight.

    Dim 0 of a transposed convolution's weight is the *input* channel; Oobleck (and torch's default)
    normalise over it, so we do too and imported ``weight_g`` tensors have shape ``[in, 1, 1]``.
    """
    conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
    return weight_norm(conv, dim=0)


class ResidualUnit(nn.Module):
    """``x + conv_k1(snake(conv_k7_dilated(snake(x))))``, length preserving. [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, *, dilation: int) -> None:
        super().__init__()
        padding = dilation * (RESIDUAL_KERNEL_SIZE - 1) // 2
        self.snake1 = Snake(channels)
        self.conv1 = weight_normed_conv1d(
            channels, channels, RESIDUAL_KERNEL_SIZE, dilation=dilation, padding=padding
        )
        self.snake2 = Snake(channels)
        self.conv2 = weight_normed_conv1d(channels, channels, 1)

    def forward(self, x_BCT: Tensor) -> Tensor:
        return x_BCT + self.conv2(self.snake2(self.conv1(self.snake1(x_BCT))))


def _check_stride(stride: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 2 or stride % 2:
        raise ValueError(f"stride: expected an even int >= 2 (see module docstring), got {stride!r}")


class EncoderBlock(nn.Module):
    """Residual units at ``in_channels``, then Snake and a strided conv down by ``stride``.

    [B, in_channels, n * stride] -> [B, out_channels, n].
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, dilations: Sequence[int]) -> None:
        super().__init__()
        _check_stride(stride)
        self.residual_units = nn.ModuleList(ResidualUnit(in_channels, dilation=d) for d in dilations)
        self.snake = Snake(in_channels)
        self.downsample = weight_normed_conv1d(
            in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)
        )

    def forward(self, x_BCT: Tensor) -> Tensor:
        for unit in self.residual_units:
            x_BCT = unit(x_BCT)
        return self.downsample(self.snake(x_BCT))


class DecoderBlock(nn.Module):
    """Snake and a transposed conv up by ``stride``, then residual units at ``out_channels``.

    [B, in_channels, n] -> [B, out_channels, n * stride].
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, dilations: Sequence[int]) -> None:
        super().__init__()
        _check_stride(stride)
        self.snake = Snake(in_channels)
        self.upsample = weight_normed_conv_transpose1d(
            in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)
        )
        self.residual_units = nn.ModuleList(ResidualUnit(out_channels, dilation=d) for d in dilations)

    def forward(self, x_BCT: Tensor) -> Tensor:
        x_BCT = self.upsample(self.snake(x_BCT))
        for unit in self.residual_units:
            x_BCT = unit(x_BCT)
        return x_BCT
