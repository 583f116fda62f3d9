"""Exact FLOP counts of the layers DynaLay runs.

Convention: one multiply-accumulate is 2 FLOPs, a bias adds 1 FLOP per output element.
Element-wise work (normalisation, ReLU, the residual norm) is not counted: it is a few
percent of a 3x3 convolution and would only blur the comparison between paths.
"""

from __future__ import annotations


def conv2d_flops(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    out_size: int,
    bias: bool = False,
) -> int:
    """FLOPs of one square ``kernel_size`` convolution producing ``(out_channels, out_size, out_size)``."""
    outputs = out_channels * out_size * out_size
    return 2 * in_channels * kernel_size * kernel_size * outputs + (outputs if bias else 0)


def linear_flops(in_features: int, out_features: int, bias: bool = True) -> int:
    """FLOPs of one dense layer applied to one sample."""
    return 2 * in_features * out_features + (out_features if bias else 0)


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Side of a convolution's output on a square input of side ``size``."""
    return (size + 2 * padding - kernel_size) // stride + 1
