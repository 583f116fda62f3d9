"""Pixel normalisation: the one map from stored uint8 pixels to the network's float input.

The dataset splits (``dynalay_env.data.ImageSplit.normalized``) and the deployable classifier
(:class:`main_model.adaptive.AdaptiveClassifier`) both call :func:`normalize_pixels`, so an
image gives the same bits in the environment and in deployment.
"""

from __future__ import annotations

from torch import Tensor


def normalize_pixels(pixels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(B, C, H, W) uint8 pixels -> float32 ``(pixels / 255 - mean) / std``.

    ``mean``/``std``: (1, C, 1, 1) float32. The one normalisation of images, shared with the
    dataset splits (``dynalay_env.data.ImageSplit.normalized``) so both give the same bits.
    """
    values = pixels.float().div_(255.0)
    return values.sub_(mean.to(values.device)).div_(std.to(values.device))
