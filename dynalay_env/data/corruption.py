"""Occluded and cluttered images of varying difficulty, generated offline and seeded.

Recurrent (lateral) connections are known to help recognition when objects are occluded or
cluttered (Spoerer et al., 2017), and such inputs vary in difficulty image by image: where a
per-input compute policy should pay. :func:`corrupt_images` makes such a set from real images
(e.g. Fashion-MNIST), the same for every model and every run:

- each image gets a severity s ~ U(0, 1), drawn from the seed and the image's position;
- clutter: a fragment (a random window of side 10-18 pixels) of another image of the same
  split, shifted to a random place, is laid over it with the pixel-wise maximum, at
  intensity s;
- occlusion: up to three grey rectangles (sides 4 to 4 + 10 s pixels), as many as
  ``round(3 s)``, hide parts of it;
- noise: Gaussian pixel noise of standard deviation 0.25 s (on [0, 1] pixels).

Everything is vectorised over the images (no per-image Python); the result is uint8 like the
input, so the rest of the data pipeline (normalisation, splits) is unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Most occluding rectangles per image (at severity 1).
MAX_OCCLUDERS = 3


def _windows(generator: torch.Generator, count: int, size: int, low: Tensor, high: Tensor):
    """Per image a random window inside a (size, size) grid: (top, left, height, width)."""
    side = (low + (high - low) * torch.rand(count, generator=generator)).round().long()
    top = (torch.rand(count, generator=generator) * (size - side + 1)).long()
    left = (torch.rand(count, generator=generator) * (size - side + 1)).long()
    return top, left, side


def _mask(top: Tensor, left: Tensor, side: Tensor, size: int) -> Tensor:
    """(N, size, size) bool: True inside each image's window."""
    grid = torch.arange(size)
    rows = (grid >= top[:, None]) & (grid < (top + side)[:, None])
    cols = (grid >= left[:, None]) & (grid < (left + side)[:, None])
    return rows[:, :, None] & cols[:, None, :]


def corrupt_images(images: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Occlude and clutter ``images`` (N, H, W) or (N, C, H, W) uint8, square.

    Returns the corrupted images (same shape, uint8) and each image's severity (N,) in [0, 1].
    The same ``images`` and ``seed`` always give the same result.
    """
    if images.dtype != torch.uint8 or images.dim() not in (3, 4):
        raise ValueError(
            f"corrupt_images takes uint8 images (N, H, W) or (N, C, H, W), got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"corrupt_images takes square images, got {tuple(images.shape)}")
    count, size = images.shape[0], images.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    severity = torch.rand(count, generator=generator)
    pixels = images.float() / 255.0
    channels = pixels.dim() == 4
    if not channels:
        pixels = pixels[:, None]
    expand = (slice(None), None, None, None)  # (N,) -> (N, 1, 1, 1)

    # Clutter: a window of another image, moved to a random place, laid over at intensity s.
    donors = torch.randint(0, max(count, 1), (count,), generator=generator)
    low, high = torch.full((count,), 10.0), torch.full((count,), 18.0)
    top, left, side = _windows(generator, count, size, low, high)
    to_top = (torch.rand(count, generator=generator) * (size - side + 1)).long()
    to_left = (torch.rand(count, generator=generator) * (size - side + 1)).long()
    grid = torch.arange(size)
    source_rows = (grid - to_top[:, None] + top[:, None]).clamp(0, size - 1)  # (N, size)
    source_cols = (grid - to_left[:, None] + left[:, None]).clamp(0, size - 1)
    donor = pixels[donors]
    shape = donor.shape
    moved = donor.gather(2, source_rows[:, None, :, None].expand(shape))
    moved = moved.gather(3, source_cols[:, None, None, :].expand(shape))
    window = _mask(to_top, to_left, side, size)[:, None]
    fragment = torch.where(window, moved, torch.zeros(()))
    pixels = torch.maximum(pixels, fragment * severity[expand])

    # Occlusion: round(3 s) grey rectangles.
    grey = torch.full((), 0.5)
    for index in range(MAX_OCCLUDERS):
        active = (severity * MAX_OCCLUDERS).round() > index
        low, high = torch.full((count,), 4.0), 4.0 + 10.0 * severity
        top, left, side = _windows(generator, count, size, low, high)
        hidden = (_mask(top, left, side, size) & active[:, None, None])[:, None]
        pixels = torch.where(hidden, grey, pixels)

    # Noise.
    noise = torch.randn(pixels.shape, generator=generator) * 0.25 * severity[expand]
    pixels = (pixels + noise).clamp(0.0, 1.0)
    if not channels:
        pixels = pixels[:, 0]
    return (pixels * 255.0).round().to(torch.uint8), severity
