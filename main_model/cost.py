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


def conv1d_flops(in_channels: int, out_channels: int, kernel_size: int, length: int) -> int:
    """FLOPs of one bias-free 1-D convolution producing ``(out_channels, length)``."""
    return 2 * in_channels * kernel_size * out_channels * length


def lstm_flops(input_size: int, hidden_size: int, steps: int) -> int:
    """FLOPs of one LSTM layer (PyTorch's: biases ``b_ih`` and ``b_hh``) over ``steps`` steps.

    Per step the four gates are ``W_ih x + b_ih + W_hh h + b_hh``, each ``hidden_size`` wide:
    ``2 * 4H * (I + H)`` multiply-add FLOPs plus ``2 * 4H`` for the two biases. The gate
    non-linearities and the cell update are element-wise and not counted (module convention).
    """
    gates = 4 * hidden_size
    return steps * (2 * gates * (input_size + hidden_size) + 2 * gates)
